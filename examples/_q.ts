import { loadCheckpoint } from './llama2c/checkpoint';
import { Tokenizer } from './llama2c/tokenizer';
import { attentionDims, Transformer } from './llama2c/model';
import { ReferenceAttention } from './llama2c/reference-attention';
import { argmax } from './llama2c/math';
import { loadStories, prefixLength } from './eval/stories';
import { MODEL_PATH, TOKENIZER_PATH, EVAL_TEXT_PATH } from './llama2c/paths';
const cp = loadCheckpoint(MODEL_PATH); const tok = Tokenizer.load(TOKENIZER_PATH, 512);
const dims = attentionDims(cp.config);
const stories = loadStories(EVAL_TEXT_PATH, tok, 512, 6);
function fq(x: Float32Array, g: number, bits: 8 | 4) {
  const y = new Float32Array(x);
  for (let i = 0; i < y.length; i += g) {
    if (bits === 8) { let m = 0; for (let j = 0; j < g; j++) m = Math.max(m, Math.abs(y[i+j]!)); const s = m / 127; for (let j = 0; j < g; j++) y[i+j] = s ? Math.round(y[i+j]! / s) * s : 0; }
    else { let lo = Infinity, hi = -Infinity; for (let j = 0; j < g; j++) { lo = Math.min(lo, y[i+j]!); hi = Math.max(hi, y[i+j]!); } const s = (hi - lo) / 15; for (let j = 0; j < g; j++) y[i+j] = s ? lo + Math.round((y[i+j]! - lo) / s) * s : lo; }
  }
  return y;
}
class Q extends ReferenceAttention { constructor(d: any, public g: number, public bits: 8|4) { super(d); } override append(l: number, k: Float32Array, v: Float32Array, s: number) { super.append(l, fq(k, this.g, this.bits), fq(v, this.g, this.bits), s); } }
for (const [g, bits] of [[8, 8], [4, 8], [8, 4]] as const) {
  let agree = 0, n = 0;
  for (const ids of stories) {
    const p = prefixLength(ids);
    const ref = new Transformer(cp, new ReferenceAttention(dims)).prefill(ids.slice(0, ids.length - 1), { logits: 'all' });
    const q = new Transformer(cp, new Q(dims, g, bits)).prefill(ids.slice(0, ids.length - 1), { logits: 'all' });
    for (let t = p; t < ids.length - 1; t++) { n++; if (argmax(ref, t * 512, 512) === argmax(q, t * 512, 512)) agree++; }
  }
  console.log(`fake-quant int${bits} g${g}: agreement ${(100 * agree / n).toFixed(2)}% (${n} tokens)`);
}
