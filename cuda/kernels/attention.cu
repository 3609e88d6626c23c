// Decode / chunked-prefill attention in the flash-decoding style: every stream is cut into
// fixed row ranges (kAttentionSplitRows); one block per (range, tile of query rows) streams
// the range's K/V tiles into shared memory (16-byte cp.async, double-buffered, the block
// table walked per tile) and runs an online softmax for all query rows of the tile at once,
// so the G query heads of a GQA group and the Tq tokens of a prefill chunk share every tile.
// A merge kernel combines the partial (m, l, acc) states and undoes the value rotation; a
// third kernel turns the logits the first one kept into attention mass once the final
// log-sum-exp is known. Formats and head_dim are template parameters, chosen by one table.
#include <array>
#include <climits>
#include <utility>

#include "async_copy.cuh"
#include "hadamard.cuh"
#include "kernel_args.h"
#include "mma.cuh"
#include "rope.cuh"
#include "row_chunks.cuh"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarps = 4;
constexpr unsigned kThreads = 32 * kWarps;
constexpr uint32_t kMaxTileRows = 32;     // the softmax step gives each row of a tile one lane
constexpr uint32_t kStageBudget = 16384;  // bytes of key + value rows per pipeline stage
constexpr float kNegInf = -__builtin_huge_valf();

// Thread geometry per head_dim class. Scores: kKeyLanes lanes share a key row (kKeyElems
// elements each), 32 / kKeyLanes rows per warp at once, so a dot product costs log2(kKeyLanes)
// shuffles. Values: a warp's 32 lanes cover a row (kValueElems each) and keep acc for every
// query row in registers. The generic class serves any head_dim <= 1024 element by element;
// the lifted class (kLiftedClass) serves low-rank key rows lifted before RoPE (liftTile).
constexpr int kLiftedClass = -1;
template <int DC>
struct Geometry {
  static_assert(DC == 64 || DC == 128, "specialized head_dim classes are 64 and 128");
  static constexpr bool kGeneric = false;
  static constexpr bool kLifted = false;
  static constexpr uint32_t kQueryRows = 8;
  static constexpr uint32_t kKeyLanes = 8;
  static constexpr uint32_t kKeyElems = DC / kKeyLanes;
  static constexpr uint32_t kValueElems = DC / 32;
  KVC_DEVICE static uint32_t headDim(uint32_t) { return DC; }
};
template <>
struct Geometry<0> {
  static constexpr bool kGeneric = true;
  static constexpr bool kLifted = false;
  static constexpr uint32_t kQueryRows = 2;
  static constexpr uint32_t kKeyLanes = 32;
  static constexpr uint32_t kKeyElems = 32;   // element d = c * 32 + lane, c < 32: head_dim <= 1024
  static constexpr uint32_t kValueElems = 32;
  KVC_DEVICE static uint32_t headDim(uint32_t d) { return d; }
};
// Lifted low-rank keys: the scores read lifted f32 keys from shared memory (one row per warp,
// element by element), so the key geometry is the generic one; 4 query rows per block (a GQA-4
// decode lifts each row once) and value rows of at most 256 coefficients keep acc at 32
// registers, which leaves room for the lift within the generic class's register budget.
template <>
struct Geometry<kLiftedClass> {
  static constexpr bool kGeneric = true;
  static constexpr bool kLifted = true;
  static constexpr uint32_t kQueryRows = 4;
  static constexpr uint32_t kKeyLanes = 32;
  static constexpr uint32_t kKeyElems = 32;
  static constexpr uint32_t kValueElems = 8;  // value width <= 256
  KVC_DEVICE static uint32_t headDim(uint32_t d) { return d; }
};

// Elements per decode call: the widest run the format loads at once, 1 on the generic path.
template <Storage S, uint32_t kElems, bool kGeneric>
struct Runs {
  static constexpr uint32_t kCodecRun = static_cast<uint32_t>(ChunkCodec<S>::kChunk);
  static constexpr uint32_t kSize = kGeneric ? 1 : (kElems < kCodecRun ? kElems : kCodecRun);
  static constexpr uint32_t kCount = kElems / kSize;
};

int headDimClass(uint32_t headDim) { return headDim == 64 || headDim == 128 ? static_cast<int>(headDim) : 0; }

// Dynamic shared memory of the split kernel, in bytes, every offset 16-byte aligned:
//   q       float[queryRows][qStride]    rotated queries of the block's query rows
//   s       float[queryRows][32]         logits of the current tile, then their exp
//   stats   float m, l, corr [queryRows]; int32 cutoff [queryRows]
//   coef    float[tileRows][headDim]     lifted keys only: the tile's decoded coefficients
//   lift    float[tileRows][qStride]     lifted keys only: the tile's keys lifted and rotated
//   region  two pipeline stages (keys | values | beta[32] | positions[32]), later reused as
//           float[warps][queryRows][value width] for the cross-warp sum of acc
struct SmemPlan {
  uint32_t tileRows = 0;
  uint32_t qStride = 0;
  uint32_t keyBuf = 0, valueBuf = 0, stageBytes = 0;
  uint32_t oS = 0, oStats = 0, oCoef = 0, oLift = 0, oRegion = 0, total = 0;
};

template <int DC>
SmemPlan planSmem(const AttentionArgs& a) {
  constexpr uint32_t QR = Geometry<DC>::kQueryRows;
  const BlockLayout& L = a.pool.layout;
  const uint32_t VD = valueWidth(a.codec);
  SmemPlan p;
  const uint32_t rowPair = L.keyRowBytes + L.valueRowBytes;
  p.tileRows = kStageBudget / rowPair;
  p.tileRows = p.tileRows < 1 ? 1 : (p.tileRows > kMaxTileRows ? kMaxTileRows : p.tileRows);
  if (p.tileRows > L.blockSize) p.tileRows = L.blockSize;  // a tile never leaves its block
  p.qStride = alignUp(a.liftDim ? a.liftDim : a.codec.headDim, 4);
  // +32: the copy starts at the 16-byte boundary below the first row and ends at the one above.
  p.keyBuf = alignUp(p.tileRows * L.keyRowBytes + 32, 16);
  p.valueBuf = alignUp(p.tileRows * L.valueRowBytes + 32, 16);
  p.stageBytes = p.keyBuf + p.valueBuf + 2 * 4 * kMaxTileRows;
  p.oS = alignUp(QR * p.qStride * 4, 16);
  p.oStats = p.oS + QR * kMaxTileRows * 4;
  p.oCoef = p.oStats + alignUp(4 * QR * 4, 16);
  p.oLift = p.oCoef + (a.liftDim ? alignUp(p.tileRows * a.codec.headDim * 4, 16) : 0);
  p.oRegion = p.oLift + (a.liftDim ? p.tileRows * p.qStride * 4 : 0);
  const uint32_t pipeline = 2 * p.stageBytes, scratch = kWarps * QR * VD * 4;
  p.total = p.oRegion + (pipeline > scratch ? pipeline : scratch);
  return p;
}

// Causal cutoff of query row `row` of a stream's M = tq × queriesPerHead rows: the position of
// the query's token, given or read from stored row length - tq + t (INT_MIN if there is none).
__device__ __forceinline__ int32_t queryCutoff(const AttentionArgs& a, const AttentionStreamArgs& st, uint32_t stream,
                                               uint32_t row) {
  const uint32_t t = row / a.queriesPerHead;
  if (a.queryPositions) return a.queryPositions[static_cast<size_t>(stream) * a.tq + t];
  if (st.length < static_cast<int32_t>(a.tq)) return INT_MIN;
  const BlockLayout& L = a.pool.layout;
  const int32_t bs = static_cast<int32_t>(L.blockSize);
  const int32_t stored = st.length - static_cast<int32_t>(a.tq) + static_cast<int32_t>(t);
  const uint8_t* block = a.pool.base + static_cast<uint64_t>(st.blockTable[stored / bs]) * L.blockBytes;
  return reinterpret_cast<const int32_t*>(block + L.positionsOffset)[stored % bs];
}

#include "attention_mma.cuh"

// Lifts the n key rows of a tile (D = codec.headDim coefficients each, format KS) to liftDim
// floats, k = B c with the stream's basis (read through L1: it is small and every block of the
// stream reads it), and rotates each by RoPE at its row's position (as stored, or its index in
// the stream), so the scores are plain dots with the queries, which arrive rotated by their
// own positions. Two passes: decode the coefficients once (shared memory), then one thread per
// rotated channel pair (both channels share the angle) or per channel past ropeDims.
// Ends with a barrier: lift is read by every warp next.
template <Storage KS>
__device__ void liftTile(const AttentionArgs& a, const AttentionStreamArgs& st, const SmemPlan& plan,
                         const unsigned char* keys, const int32_t* posT, int32_t r, uint32_t n, float* coef, float* lift) {
  const BlockLayout& L = a.pool.layout;
  const uint32_t R = a.codec.headDim, QD = a.liftDim, GS = a.codec.groupSize, tid = threadIdx.x;
  for (uint32_t x = tid; x < n * R; x += kThreads) {
    const uint32_t i = x / R, j = x % R;
    float c[1];
    ChunkCodec<KS>::template decode<1>(keys + i * L.keyRowBytes, R, GS, j, c);
    coef[i * R + j] = c[0];
  }
  __syncthreads();
  const uint32_t half = a.ropeDims / 2, units = QD - half;
  const float* B = st.keyBasisT;  // [R][QD]
  for (uint32_t x = tid; x < n * units; x += kThreads) {
    const uint32_t i = x / units, u = x % units;
    const float* c = coef + i * R;
    float* k = lift + i * plan.qStride;
    if (u < half) {
      const uint32_t d0 = a.ropeStyle == 0 ? 2 * u : u, d1 = a.ropeStyle == 0 ? 2 * u + 1 : u + half;
      float k0 = 0.0f, k1 = 0.0f;
      for (uint32_t j = 0; j < R; ++j) {
        k0 += c[j] * B[j * QD + d0];
        k1 += c[j] * B[j * QD + d1];
      }
      const uint32_t position = a.ropeByRank ? static_cast<uint32_t>(r + static_cast<int32_t>(i)) : static_cast<uint32_t>(posT[i]);
      float c0, s0, c1, s1;
      ropeAngle(a.ropeCos, a.ropeSin, a.ropeDims, position, d0, c0, s0);
      ropeAngle(a.ropeCos, a.ropeSin, a.ropeDims, position, d1, c1, s1);
      k[d0] = k0 * c0 + k1 * s0;  // signed sin per channel (kvc/rope.h)
      k[d1] = k1 * c1 + k0 * s1;
    } else {
      const uint32_t d = a.ropeDims + (u - half);
      float kd = 0.0f;
      for (uint32_t j = 0; j < R; ++j) kd += c[j] * B[j * QD + d];
      k[d] = kd;
    }
  }
  __syncthreads();
}

// Grid: W * qTiles blocks, block b serving split b / qTiles and query rows
// [(b % qTiles) * QR, +QR) of that split's stream (the query tiles of one split run side by
// side, so they find its rows in L2). Writes the partial state of each query row to
// a.partials and, for scored streams, every logit to st.logits (-inf where masked).
template <Storage KS, Storage VS, int DC>
__global__ KVC_LAUNCH_BOUNDS(kThreads, 4) void attentionSplitKernel(AttentionArgs a, SmemPlan plan) {
  using Geo = Geometry<DC>;
  using KeyRuns = Runs<KS, Geo::kKeyElems, Geo::kGeneric>;
  using ValueRuns = Runs<VS, Geo::kValueElems, Geo::kGeneric>;
  constexpr uint32_t QR = Geo::kQueryRows, KL = Geo::kKeyLanes, kRowsPerWarp = 32 / KL;
  constexpr uint32_t kValueRegs = ValueRuns::kCount * ValueRuns::kSize;
  KVC_DYNAMIC_SHARED(unsigned char, smem);
  float* qS = reinterpret_cast<float*>(smem);
  float* sS = reinterpret_cast<float*>(smem + plan.oS);
  float* mS = reinterpret_cast<float*>(smem + plan.oStats);
  float* lS = mS + QR;
  float* corrS = lS + QR;
  int32_t* cutS = reinterpret_cast<int32_t*>(corrS + QR);
  unsigned char* region = smem + plan.oRegion;

  const BlockLayout& L = a.pool.layout;
  const uint32_t D = Geo::headDim(a.codec.headDim), GS = a.codec.groupSize;
  // Value rows may be narrower or wider than key rows (low-rank values of their own rank);
  // launchAttention sends such codecs to the generic class, so VD == D in the others.
  const uint32_t VD = Geo::kGeneric ? valueWidth(a.codec) : D;
  // Lifted low-rank keys (a.liftDim): rows of D coefficients, queries of QD floats.
  constexpr bool lifted = Geo::kLifted;
  const uint32_t QD = lifted ? a.liftDim : D;
  const uint32_t M = a.tq * a.queriesPerHead, qTiles = (M + QR - 1) / QR;
  const uint32_t workIndex = blockIdx.x / qTiles, n0 = (blockIdx.x % qTiles) * QR;
  const uint32_t qRows = M - n0 < QR ? M - n0 : QR;
  const AttentionWork work = a.work[workIndex];
  const AttentionStreamArgs st = a.streams[work.stream];
  const unsigned tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int32_t bs = static_cast<int32_t>(L.blockSize);

  // Query rows n0.. (zero padding past qRows) and their causal cutoffs (INT_MIN for padding).
  for (uint32_t i = tid; i < QR * plan.qStride; i += kThreads) {
    const uint32_t j = i / plan.qStride, d = i % plan.qStride;
    qS[i] = j < qRows && d < QD ? a.queries[(static_cast<size_t>(work.stream) * M + n0 + j) * QD + d] : 0.0f;
  }
  if (tid < QR) {
    cutS[tid] = tid < qRows ? queryCutoff(a, st, work.stream, n0 + tid) : INT_MIN;
    mS[tid] = kNegInf;
    lS[tid] = 0.0f;
  }
  __syncthreads();
  // Keys are stored rotated; q.k is preserved when q is rotated the same way.
  if (a.codec.keySigns) {
    for (uint32_t j = warp; j < qRows; j += kWarps) {
      rotateForward(qS + j * plan.qStride, a.codec.keySigns, D, lane, 32, WarpSync());
    }
    __syncthreads();
  }

  const int32_t rowEnd = work.rowEnd;
  const int32_t tileRows = static_cast<int32_t>(plan.tileRows);
  auto tileEnd = [&](int32_t r) {
    const int32_t blockEnd = (r / bs + 1) * bs, e = r + tileRows < blockEnd ? r + tileRows : blockEnd;
    return e < rowEnd ? e : rowEnd;
  };
  // Issues the copies of rows [r0, r1) (one pool block) into a stage: every byte range is
  // widened to 16-byte boundaries, which stay inside the block's key / value arrays
  // (kvc/formats.h aligns them to 64 bytes).
  auto issue = [&](int32_t r0, int32_t r1, uint32_t stage) {
    const uint8_t* base = a.pool.base + static_cast<uint64_t>(st.blockTable[r0 / bs]) * L.blockBytes;
    const uint32_t slot0 = static_cast<uint32_t>(r0 % bs), n = static_cast<uint32_t>(r1 - r0);
    unsigned char* dst = region + stage * plan.stageBytes;
    const uint32_t k0 = (slot0 * L.keyRowBytes) & ~15u, k1 = alignUp((slot0 + n) * L.keyRowBytes, 16);
    for (uint32_t off = k0 + 16 * tid; off < k1; off += 16 * kThreads) copyAsync16(dst + (off - k0), base + off);
    dst += plan.keyBuf;
    const uint8_t* values = base + L.valuesOffset;
    const uint32_t v0 = (slot0 * L.valueRowBytes) & ~15u, v1 = alignUp((slot0 + n) * L.valueRowBytes, 16);
    for (uint32_t off = v0 + 16 * tid; off < v1; off += 16 * kThreads) copyAsync16(dst + (off - v0), values + off);
    dst += plan.valueBuf;
    for (uint32_t i = tid; i < n; i += kThreads) {
      copyAsync4(dst + 4 * i, base + L.betaOffset + 4 * (slot0 + i));
      copyAsync4(dst + 4 * (kMaxTileRows + i), base + L.positionsOffset + 4 * (slot0 + i));
    }
    commitAsync();
  };

  float acc[QR][kValueRegs];
  KVC_UNROLL
  for (uint32_t j = 0; j < QR; ++j) {
    KVC_UNROLL
    for (uint32_t e = 0; e < kValueRegs; ++e) acc[j][e] = 0.0f;
  }

  int32_t r = work.rowBegin;
  uint32_t stage = 0;
  if (r < rowEnd) issue(r, tileEnd(r), 0);
  while (r < rowEnd) {
    const int32_t r1 = tileEnd(r);
    if (r1 < rowEnd) {
      issue(r1, tileEnd(r1), stage ^ 1u);  // the next tile flies while this one is computed
      waitAsync<1>();
    } else {
      waitAsync<0>();
    }
    __syncthreads();

    const uint32_t n = static_cast<uint32_t>(r1 - r), slot0 = static_cast<uint32_t>(r % bs);
    const unsigned char* keys = region + stage * plan.stageBytes;
    const unsigned char* values = keys + plan.keyBuf;
    const float* betaT = reinterpret_cast<const float*>(values + plan.valueBuf);
    const int32_t* posT = reinterpret_cast<const int32_t*>(betaT + kMaxTileRows);
    keys += slot0 * L.keyRowBytes - ((slot0 * L.keyRowBytes) & ~15u);
    values += slot0 * L.valueRowBytes - ((slot0 * L.valueRowBytes) & ~15u);
    if constexpr (lifted) {
      liftTile<KS>(a, st, plan, keys, posT, r, n, reinterpret_cast<float*>(smem + plan.oCoef),
                   reinterpret_cast<float*>(smem + plan.oLift));
    }

    // Scores: scale * q.k + beta, -inf past the causal cutoff.
    const uint32_t sub = lane / KL, subLane = lane % KL;
    for (uint32_t i0 = 0; i0 < n; i0 += kWarps * kRowsPerWarp) {  // block-uniform trip count
      const uint32_t i = i0 + warp * kRowsPerWarp + sub;
      const bool valid = i < n;
      float dot[QR];
      KVC_UNROLL
      for (uint32_t j = 0; j < QR; ++j) dot[j] = 0.0f;
      if (valid && lifted) {
        // Lifted keys already carry RoPE at their positions: a plain dot with the queries.
        const float* k = reinterpret_cast<const float*>(smem + plan.oLift) + i * plan.qStride;
        for (uint32_t d = lane; d < QD; d += 32) {
          const float kd = k[d];
          KVC_UNROLL
          for (uint32_t j = 0; j < QR; ++j) {
            if (j >= qRows) break;
            dot[j] += qS[j * plan.qStride + d] * kd;
          }
        }
      } else if (valid) {
        const uint8_t* krow = keys + i * L.keyRowBytes;
        KVC_UNROLL
        for (uint32_t c = 0; c < KeyRuns::kCount; ++c) {
          const uint32_t d0 = (c * KL + subLane) * KeyRuns::kSize;
          if (Geo::kGeneric && d0 >= D) continue;
          float k[KeyRuns::kSize];
          ChunkCodec<KS>::template decode<KeyRuns::kSize>(krow, D, GS, d0, k);
          if (a.ropeDims != 0) {
            // Keys before RoPE: R(q_pos) q . R(p) k = (R(-p) R(q_pos) q) . k, so each query
            // (rotated by its position on the host) is rotated back by this row's position,
            // element by element from shared memory, where its partner channel is at hand.
            const uint32_t position = a.ropeByRank ? static_cast<uint32_t>(r + static_cast<int32_t>(i))
                                                   : static_cast<uint32_t>(posT[i]);
            for (uint32_t e = 0; e < KeyRuns::kSize; ++e) {
              const uint32_t d = d0 + e;
              float c = 1.0f, sn = 0.0f;
              uint32_t partner = d;
              if (d < a.ropeDims) {
                ropeAngle(a.ropeCos, a.ropeSin, a.ropeDims, position, d, c, sn);
                partner = ropePartnerOf(d, a.ropeDims, a.ropeStyle);
              }
              KVC_UNROLL
              for (uint32_t j = 0; j < QR; ++j) {
                if (j >= qRows) break;
                const float* qj = qS + j * plan.qStride;
                dot[j] += k[e] * (qj[d] * c - sn * qj[partner]);
              }
            }
            continue;
          }
          KVC_UNROLL
          for (uint32_t j = 0; j < QR; ++j) {
            if (j >= qRows) break;  // block-uniform: a GQA-4 decode does half the work of QR = 8
            const float* q = qS + j * plan.qStride + d0;
            if constexpr (KeyRuns::kSize % 4 == 0) {
              // qStride and d0 are multiples of 4: 128-bit shared loads of q.
              KVC_UNROLL
              for (uint32_t e = 0; e < KeyRuns::kSize; e += 4) {
                const float4 q4 = *reinterpret_cast<const float4*>(q + e);
                dot[j] += q4.x * k[e];
                dot[j] += q4.y * k[e + 1];
                dot[j] += q4.z * k[e + 2];
                dot[j] += q4.w * k[e + 3];
              }
            } else {
              KVC_UNROLL
              for (uint32_t e = 0; e < KeyRuns::kSize; ++e) dot[j] += q[e] * k[e];
            }
          }
        }
      }
      KVC_UNROLL
      for (uint32_t j = 0; j < QR; ++j) {
        if (j >= qRows) break;
        KVC_UNROLL
        for (uint32_t off = KL / 2; off > 0; off /= 2) dot[j] += __shfl_xor_sync(0xFFFFFFFFu, dot[j], off);
      }
      if (valid && subLane == 0) {
        const int32_t pos = posT[i];
        const float beta = betaT[i];
        KVC_UNROLL
        for (uint32_t j = 0; j < QR; ++j) {
          const float logit = pos <= cutS[j] ? a.scale * dot[j] + beta : kNegInf;
          sS[j * kMaxTileRows + i] = logit;
          if (st.logits && j < qRows) st.logits[static_cast<size_t>(n0 + j) * st.length + r + i] = logit;
        }
      }
    }
    __syncthreads();

    // Online softmax over the tile, one warp per query row, one lane per tile row.
    for (uint32_t j = warp; j < QR; j += kWarps) {
      const float x = lane < n ? sS[j * kMaxTileRows + lane] : kNegInf;
      float tileMax = x;
      KVC_UNROLL
      for (uint32_t off = 16; off > 0; off /= 2) tileMax = fmaxf(tileMax, __shfl_xor_sync(0xFFFFFFFFu, tileMax, off));
      const float mOld = mS[j], mNew = fmaxf(mOld, tileMax);
      const float p = x == kNegInf ? 0.0f : __expf(x - mNew);
      sS[j * kMaxTileRows + lane] = p;
      float sum = p;
      KVC_UNROLL
      for (uint32_t off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, off);
      if (lane == 0) {
        const float corr = mNew == kNegInf ? 1.0f : __expf(mOld - mNew);  // 0 when mOld = -inf
        corrS[j] = corr;
        lS[j] = lS[j] * corr + sum;
        mS[j] = mNew;
      }
    }
    __syncthreads();

    // acc += p v; every warp's acc shares the block's running max, so warps sum at the end.
    KVC_UNROLL
    for (uint32_t j = 0; j < QR; ++j) {
      const float corr = corrS[j];
      KVC_UNROLL
      for (uint32_t e = 0; e < kValueRegs; ++e) acc[j][e] *= corr;
    }
    for (uint32_t i = warp; i < n; i += kWarps) {
      const uint8_t* vrow = values + i * L.valueRowBytes;
      KVC_UNROLL
      for (uint32_t c = 0; c < ValueRuns::kCount; ++c) {
        const uint32_t d0 = (c * 32 + lane) * ValueRuns::kSize;
        if (Geo::kGeneric && d0 >= VD) continue;
        float v[ValueRuns::kSize];
        ChunkCodec<VS>::template decode<ValueRuns::kSize>(vrow, VD, GS, d0, v);
        KVC_UNROLL
        for (uint32_t j = 0; j < QR; ++j) {
          if (j >= qRows) break;
          const float p = sS[j * kMaxTileRows + i];
          KVC_UNROLL
          for (uint32_t e = 0; e < ValueRuns::kSize; ++e) acc[j][c * ValueRuns::kSize + e] += p * v[e];
        }
      }
    }
    __syncthreads();  // the stage and s are rewritten next
    r = r1;
    stage ^= 1u;
  }

  // Cross-warp sum of acc through the (now idle) pipeline region, then the partial state.
  float* scratch = reinterpret_cast<float*>(region);
  KVC_UNROLL
  for (uint32_t j = 0; j < QR; ++j) {
    KVC_UNROLL
    for (uint32_t c = 0; c < ValueRuns::kCount; ++c) {
      KVC_UNROLL
      for (uint32_t e = 0; e < ValueRuns::kSize; ++e) {
        const uint32_t d = (c * 32 + lane) * ValueRuns::kSize + e;
        if (d < VD) scratch[(warp * QR + j) * VD + d] = acc[j][c * ValueRuns::kSize + e];
      }
    }
  }
  __syncthreads();
  const size_t P = VD + 2;
  float* part = a.partials + (static_cast<size_t>(workIndex) * M + n0) * P;
  for (uint32_t i = tid; i < qRows * VD; i += kThreads) {
    const uint32_t j = i / VD, d = i % VD;
    float sum = 0.0f;
    for (uint32_t w = 0; w < kWarps; ++w) sum += scratch[(w * QR + j) * VD + d];
    part[j * P + 2 + d] = sum;
  }
  if (tid < qRows) {
    part[tid * P] = mS[tid];
    part[tid * P + 1] = lS[tid];
  }
}

// Grid: S * ceil(M / 4) blocks, one warp per query row n of stream s: merges the stream's
// splits in order, divides by l, rotates back, writes out and lse. Warps sync only among
// themselves, so a warp past the last row may leave early.
__global__ KVC_LAUNCH_BOUNDS(kThreads, 4) void attentionMergeKernel(AttentionArgs a) {
  KVC_DYNAMIC_SHARED(float, rows);  // [warps][value width]
  const uint32_t D = valueWidth(a.codec), M = a.tq * a.queriesPerHead;
  const uint32_t tilesPerStream = (M + kWarps - 1) / kWarps;
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t s = blockIdx.x / tilesPerStream, n = (blockIdx.x % tilesPerStream) * kWarps + warp;
  if (n >= M) return;
  const AttentionStreamArgs st = a.streams[s];
  const size_t P = D + 2, splitStride = static_cast<size_t>(M) * P;
  const float* part = a.partials + (static_cast<size_t>(st.firstWork) * M + n) * P;
  float mMax = kNegInf;
  for (uint32_t i = 0; i < st.workCount; ++i) mMax = fmaxf(mMax, part[i * splitStride]);
  float l = 0.0f;
  if (mMax != kNegInf) {
    for (uint32_t i = 0; i < st.workCount; ++i) {
      const float m = part[i * splitStride];
      if (m != kNegInf) l += __expf(m - mMax) * part[i * splitStride + 1];
    }
  }
  float* row = rows + warp * D;
  for (uint32_t d = lane; d < D; d += 32) {
    float o = 0.0f;
    if (l > 0.0f) {
      for (uint32_t i = 0; i < st.workCount; ++i) {
        const float m = part[i * splitStride];
        if (m != kNegInf) o += __expf(m - mMax) * part[i * splitStride + 2 + d];
      }
      o /= l;
    }
    row[d] = o;  // no visible row: output 0, lse -inf
  }
  if (a.codec.valueSigns) {
    rotateInverse(row, a.codec.valueSigns, D, lane, 32, WarpSync());
  } else {
    __syncwarp();
  }
  float* out = a.out + (static_cast<size_t>(s) * M + n) * D;
  for (uint32_t d = lane; d < D; d += 32) out[d] = row[d];
  if (lane == 0) a.lse[static_cast<size_t>(s) * M + n] = l > 0.0f ? mMax + logf(l) : kNegInf;
}

// Grid: W blocks, one per split: adds sum_n exp(logit[n][r] - lse[n]) to scores[r] for the
// split's rows. One thread per row sums in query order, so the result is deterministic.
__global__ KVC_LAUNCH_BOUNDS(kThreads, 4) void attentionMassKernel(AttentionArgs a) {
  const AttentionWork work = a.work[blockIdx.x];
  const AttentionStreamArgs st = a.streams[work.stream];
  if (!st.logits) return;
  const uint32_t M = a.tq * a.queriesPerHead;
  const float* lse = a.lse + static_cast<size_t>(work.stream) * M;
  for (int32_t r = work.rowBegin + static_cast<int32_t>(threadIdx.x); r < work.rowEnd; r += kThreads) {
    float mass = 0.0f;
    for (uint32_t n = 0; n < M; ++n) {
      const float x = st.logits[static_cast<size_t>(n) * st.length + r];
      if (x != kNegInf) mass += __expf(x - lse[n]);  // a visible logit implies a finite lse[n]
    }
    st.scores[r] += mass;
  }
}

using SplitLauncher = cudaError_t (*)(const AttentionArgs&, cudaStream_t);

template <int DC, int K, int V>
cudaError_t launchSplit(const AttentionArgs& a, cudaStream_t stream) {
  const SmemPlan plan = planSmem<DC>(a);
  auto kernel = attentionSplitKernel<static_cast<Storage>(K), static_cast<Storage>(V), DC>;
#if defined(__CUDACC__)
  if (plan.total > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.total);
    if (e != cudaSuccess) return e;
  }
#endif
  const uint32_t M = a.tq * a.queriesPerHead, qTiles = (M + Geometry<DC>::kQueryRows - 1) / Geometry<DC>::kQueryRows;
  KVC_LAUNCH(kernel, dim3(a.workCount * qTiles), dim3(kThreads), plan.total, stream)(a, plan);
  return cudaGetLastError();
}

template <int DC, int GS, int K, int V>
cudaError_t launchMma(const AttentionArgs& a, cudaStream_t stream) {
  const MmaPlan plan = planMma(a);
  auto kernel = attentionMmaKernel<static_cast<Storage>(K), static_cast<Storage>(V), DC, GS>;
#if defined(__CUDACC__)
  if (plan.total > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.total);
    if (e != cudaSuccess) return e;
  }
#endif
  const uint32_t M = a.tq * a.queriesPerHead, qTiles = (M + kMmaQueryRows - 1) / kMmaQueryRows;
  KVC_LAUNCH(kernel, dim3(a.workCount * qTiles), dim3(kThreads), plan.total, stream)(a, plan);
  return cudaGetLastError();
}

// The tensor-core kernel exists for the f16 / int8 / int4 pairs only (nullptr elsewhere).
template <int DC, int GS, int K, int V>
constexpr SplitLauncher mmaLauncher() {
  if constexpr (mmaStorage(static_cast<Storage>(K)) && mmaStorage(static_cast<Storage>(V))) {
    return &launchMma<DC, GS, K, V>;
  } else {
    return nullptr;
  }
}

// One entry per (key format, value format): the table is generated from the format count,
// so a format added to kvc/formats.h without a ChunkCodec fails to compile here.
constexpr size_t kFormatPairs = static_cast<size_t>(kStorageCount) * kStorageCount;
template <int DC, size_t... I>
constexpr std::array<SplitLauncher, sizeof...(I)> makeTable(std::index_sequence<I...>) {
  return {{&launchSplit<DC, static_cast<int>(I / kStorageCount), static_cast<int>(I % kStorageCount)>...}};
}
constexpr std::array<SplitLauncher, kFormatPairs> kSplit64 = makeTable<64>(std::make_index_sequence<kFormatPairs>{});
constexpr std::array<SplitLauncher, kFormatPairs> kSplit128 = makeTable<128>(std::make_index_sequence<kFormatPairs>{});
constexpr std::array<SplitLauncher, kFormatPairs> kSplitGeneric = makeTable<0>(std::make_index_sequence<kFormatPairs>{});
constexpr std::array<SplitLauncher, kFormatPairs> kSplitLifted = makeTable<kLiftedClass>(std::make_index_sequence<kFormatPairs>{});
template <int DC, int GS, size_t... I>
constexpr std::array<SplitLauncher, sizeof...(I)> makeMmaTable(std::index_sequence<I...>) {
  return {{mmaLauncher<DC, GS, static_cast<int>(I / kStorageCount), static_cast<int>(I % kStorageCount)>()...}};
}
// [head_dim 64, 128][group size 32, 64]; f16 / f16 ignores the group size (both tables serve it).
constexpr std::array<SplitLauncher, kFormatPairs> kMma[2][2] = {
    {makeMmaTable<64, 32>(std::make_index_sequence<kFormatPairs>{}), makeMmaTable<64, 64>(std::make_index_sequence<kFormatPairs>{})},
    {makeMmaTable<128, 32>(std::make_index_sequence<kFormatPairs>{}), makeMmaTable<128, 64>(std::make_index_sequence<kFormatPairs>{})}};

}  // namespace

bool attentionSupportsHeadDim(uint32_t headDim) { return headDim >= 1 && headDim <= Geometry<0>::kKeyElems * 32; }

// The smallest query tile of the kernels that may serve this head_dim (the grid is largest then).
uint32_t attentionQueryTile(uint32_t headDim) {
  switch (headDimClass(headDim)) {
    case 64: return kMmaQueryRows < Geometry<64>::kQueryRows ? kMmaQueryRows : Geometry<64>::kQueryRows;
    case 128: return kMmaQueryRows < Geometry<128>::kQueryRows ? kMmaQueryRows : Geometry<128>::kQueryRows;
    default: return Geometry<0>::kQueryRows;
  }
}

cudaError_t launchAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.streamCount == 0 || a.tq == 0 || a.workCount == 0) return cudaSuccess;
  if (!attentionSupportsHeadDim(a.codec.headDim)) return cudaErrorInvalidValue;
  const size_t pair = static_cast<size_t>(a.codec.keyStorage) * kStorageCount + static_cast<size_t>(a.codec.valueStorage);
  if (pair >= kFormatPairs) return cudaErrorInvalidValue;
  SplitLauncher split = nullptr;
  // Lifted keys (a.liftDim) are served by the lifted class only.
  const bool equalWidths = valueWidth(a.codec) == a.codec.headDim && a.liftDim == 0;
  if (a.liftDim > Geometry<kLiftedClass>::kKeyElems * 32 || (a.liftDim && a.codec.keySigns) ||
      (a.liftDim && valueWidth(a.codec) > Geometry<kLiftedClass>::kValueElems * 32)) {
    return cudaErrorInvalidValue;
  }
  if (!equalWidths && (valueWidth(a.codec) > Geometry<0>::kValueElems * 32 || a.codec.valueSigns)) return cudaErrorInvalidValue;
  if (equalWidths && mmaEligible(a)) split = kMma[a.codec.headDim == 128][a.codec.groupSize == 64][pair];
  if (a.liftDim) split = kSplitLifted[pair];
  if (!split) {
    switch (equalWidths ? headDimClass(a.codec.headDim) : 0) {
      case 64: split = kSplit64[pair]; break;
      case 128: split = kSplit128[pair]; break;
      default: split = kSplitGeneric[pair]; break;
    }
  }
  cudaError_t e = split(a, stream);
  if (e != cudaSuccess) return e;
  const uint32_t M = a.tq * a.queriesPerHead;
  auto merge = attentionMergeKernel;
  KVC_LAUNCH(merge, dim3(a.streamCount * ((M + kWarps - 1) / kWarps)), dim3(kThreads),
             kWarps * valueWidth(a.codec) * sizeof(float), stream)(a);
  e = cudaGetLastError();
  if (e != cudaSuccess || !a.anyScores) return e;
  auto mass = attentionMassKernel;
  KVC_LAUNCH(mass, dim3(a.workCount), dim3(kThreads), 0, stream)(a);
  return cudaGetLastError();
}

KVC_CUDA_NAMESPACE_END
