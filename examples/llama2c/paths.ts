// Default locations of the shared models, tokenizers and evaluation texts: ../shared next to
// the repository root, or the directory KVCOMPACT_SHARED_DIR names (a clone placed elsewhere).
import path from 'node:path';

const here = __dirname; // examples/llama2c
export const SHARED_DIR = process.env['KVCOMPACT_SHARED_DIR']
  ? path.resolve(process.env['KVCOMPACT_SHARED_DIR'])
  : path.resolve(here, '../../../shared');

/** A checkpoint with its tokenizer and its own texts (see ../shared/models/README.md). */
export interface SharedModel {
  name: string;
  model: string;
  tokenizer: string;
  /** text whose first 2,000 characters give the README's reference NLL */
  evalText: string;
  /** passages separated by lines `<|endoftext|>`, for `npm run eval` */
  passages: string;
  /** prompt of the README's greedy text */
  prompt: string;
}

export const MODELS: Readonly<Record<'stories260K' | 'shakes64', SharedModel>> = {
  stories260K: {
    name: 'stories260K',
    model: path.join(SHARED_DIR, 'models/stories260K.bin'),
    tokenizer: path.join(SHARED_DIR, 'models/tok512.bin'),
    evalText: path.join(SHARED_DIR, 'data/tinystories_eval.txt'),
    // the evaluation text is already a list of stories separated by <|endoftext|>
    passages: path.join(SHARED_DIR, 'data/tinystories_eval.txt'),
    prompt: 'Once upon a time',
  },
  shakes64: {
    name: 'shakes64',
    model: path.join(SHARED_DIR, 'models/shakes64.bin'),
    tokenizer: path.join(SHARED_DIR, 'models/tokchar.bin'),
    evalText: path.join(SHARED_DIR, 'data/shakespeare_val.txt'),
    passages: path.join(SHARED_DIR, 'data/shakespeare_val.passages.txt'),
    prompt: 'ROMEO:',
  },
};

/** The shared model called `name`, or undefined (then `name` is a checkpoint file). */
export function sharedModel(name: string): SharedModel | undefined {
  return Object.prototype.hasOwnProperty.call(MODELS, name) ? MODELS[name as keyof typeof MODELS] : undefined;
}

export const MODEL_PATH = MODELS.stories260K.model;
export const TOKENIZER_PATH = MODELS.stories260K.tokenizer;
export const EVAL_TEXT_PATH = MODELS.stories260K.evalText;
/** The short sample text of the quantization quality table. */
export const SAMPLE_TEXT_PATH = path.join(SHARED_DIR, 'data/tinystories_sample.txt');
