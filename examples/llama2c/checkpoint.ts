// Loader for llama2.c "version 0" checkpoints (e.g. stories260K.bin): a header of
// seven int32 then fp32 tensors. Returns zero-copy Float32Array views into one
// aligned buffer; validates the header and the exact file size before viewing.
import { readFileSync } from 'node:fs';

export interface LlamaConfig {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  /** dim / nHeads */
  headDim: number;
  /** nKvHeads * headDim */
  kvDim: number;
  /** true when the classifier shares the token embedding (positive vocab_size in the header) */
  sharedClassifier: boolean;
}

/** Tensors are row-major [out, in]; per-layer tensors are stacked along the first axis. */
export interface LlamaWeights {
  tokenEmbedding: Float32Array; // [vocab, dim]
  rmsAtt: Float32Array; // [L, dim]
  wq: Float32Array; // [L, dim, dim]
  wk: Float32Array; // [L, kvDim, dim]
  wv: Float32Array; // [L, kvDim, dim]
  wo: Float32Array; // [L, dim, dim]
  rmsFfn: Float32Array; // [L, dim]
  w1: Float32Array; // [L, hidden, dim]
  w2: Float32Array; // [L, dim, hidden]
  w3: Float32Array; // [L, hidden, dim]
  rmsFinal: Float32Array; // [dim]
  wcls: Float32Array; // [vocab, dim] (aliases tokenEmbedding when shared)
}

export interface Checkpoint {
  config: LlamaConfig;
  weights: LlamaWeights;
}

const HEADER_BYTES = 7 * 4;

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

/** Number of fp32 values a version-0 checkpoint with this config holds after the header. */
export function checkpointFloatCount(c: LlamaConfig): number {
  const { dim, hiddenDim: h, nLayers: L, kvDim, vocabSize: v, seqLen, headDim } = c;
  return (
    v * dim + // token_embedding
    L * dim + // rms_att
    L * dim * dim + // wq
    2 * L * kvDim * dim + // wk, wv
    L * dim * dim + // wo
    L * dim + // rms_ffn
    3 * L * h * dim + // w1, w2, w3
    dim + // rms_final
    seqLen * headDim + // two unused RoPE tables of seq_len x head_dim/2
    (c.sharedClassifier ? 0 : v * dim)
  );
}

function parseHeader(bytes: Uint8Array, source: string): LlamaConfig {
  if (bytes.byteLength < HEADER_BYTES) {
    throw new CheckpointError(
      `${source}: file is ${bytes.byteLength} bytes, shorter than the 28-byte llama2.c header`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  if (dv.getUint32(0, true) === 0x616b3432) {
    throw new CheckpointError(
      `${source}: llama2.c version-${dv.getInt32(4, true)} export (magic "ak42"); only version 0 (legacy run.c format) is supported`,
    );
  }
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = h as [
    number, number, number, number, number, number, number,
  ];
  const names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'];
  const limit = 1 << 20;
  h.forEach((value, i) => {
    const v = i === 5 ? Math.abs(value) : value;
    if (v <= 0 || v > limit) {
      throw new CheckpointError(
        `${source}: header field ${names[i]} = ${value} is out of range (expected 1..${limit}); ` +
          'not a llama2.c version-0 checkpoint?',
      );
    }
  });
  if (dim % nHeads !== 0) {
    throw new CheckpointError(`${source}: dim ${dim} is not a multiple of n_heads ${nHeads}`);
  }
  if (nHeads % nKvHeads !== 0) {
    throw new CheckpointError(`${source}: n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  }
  const headDim = dim / nHeads;
  if (headDim % 2 !== 0) {
    throw new CheckpointError(`${source}: head_dim ${headDim} must be even for RoPE`);
  }
  return {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: Math.abs(rawVocab),
    seqLen,
    headDim,
    kvDim: nKvHeads * headDim,
    sharedClassifier: rawVocab > 0,
  };
}

/** Parse a checkpoint held in memory. The bytes are copied once into an aligned buffer. */
export function parseCheckpoint(bytes: Uint8Array, source = 'checkpoint'): Checkpoint {
  const config = parseHeader(bytes, source);
  const floats = checkpointFloatCount(config);
  const expected = HEADER_BYTES + floats * 4;
  if (bytes.byteLength !== expected) {
    throw new CheckpointError(
      `${source}: file is ${bytes.byteLength} bytes but the header ` +
        `(dim ${config.dim}, hidden ${config.hiddenDim}, layers ${config.nLayers}, heads ${config.nHeads}/` +
        `${config.nKvHeads}, vocab ${config.vocabSize}, seq_len ${config.seqLen}, ` +
        `${config.sharedClassifier ? 'shared' : 'separate'} classifier) implies ${expected} bytes`,
    );
  }
  // Copy so the Float32Array views are 4-byte aligned whatever the source buffer's offset.
  const data = new Float32Array(floats);
  new Uint8Array(data.buffer).set(bytes.subarray(HEADER_BYTES));

  let off = 0;
  const take = (n: number): Float32Array => {
    const view = data.subarray(off, off + n);
    off += n;
    return view;
  };
  const { dim, hiddenDim: h, nLayers: L, kvDim, vocabSize: v, seqLen, headDim } = config;
  const tokenEmbedding = take(v * dim);
  const rmsAtt = take(L * dim);
  const wq = take(L * dim * dim);
  const wk = take(L * kvDim * dim);
  const wv = take(L * kvDim * dim);
  const wo = take(L * dim * dim);
  const rmsFfn = take(L * dim);
  const w1 = take(L * h * dim);
  const w2 = take(L * dim * h);
  const w3 = take(L * h * dim);
  const rmsFinal = take(dim);
  take(seqLen * headDim); // freq_cis_real, freq_cis_imag: unused, RoPE is computed
  const wcls = config.sharedClassifier ? tokenEmbedding : take(v * dim);
  return {
    config,
    weights: { tokenEmbedding, rmsAtt, wq, wk, wv, wo, rmsFfn, w1, w2, w3, rmsFinal, wcls },
  };
}

/** Read and parse a checkpoint file. */
export function loadCheckpoint(file: string): Checkpoint {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new CheckpointError(`cannot read checkpoint ${file}: ${(err as Error).message}`);
  }
  return parseCheckpoint(bytes, file);
}
