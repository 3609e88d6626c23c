// Default locations of the shared model, tokenizer and evaluation text: ../shared next to the
// repository root, or the directory KVCOMPACT_SHARED_DIR names (a clone placed elsewhere).
import path from 'node:path';

const here = __dirname; // examples/llama2c
export const SHARED_DIR = process.env['KVCOMPACT_SHARED_DIR']
  ? path.resolve(process.env['KVCOMPACT_SHARED_DIR'])
  : path.resolve(here, '../../../shared');
export const MODEL_PATH = path.join(SHARED_DIR, 'models/stories260K.bin');
export const TOKENIZER_PATH = path.join(SHARED_DIR, 'models/tok512.bin');
export const EVAL_TEXT_PATH = path.join(SHARED_DIR, 'data/tinystories_eval.txt');
/** The short sample text of the quantization quality table. */
export const SAMPLE_TEXT_PATH = path.join(SHARED_DIR, 'data/tinystories_sample.txt');
