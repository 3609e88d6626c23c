// attention over a stream's blocks: logits scale * q.k + beta with a causal cutoff by
// position, online softmax, dequantization fused into the loads, GQA (the G query heads of
// a stream reuse its rows), optional log-sum-exp and attention-mass accumulation.
#include "hadamard.cuh"
#include "kernel_args.h"
#include "row_codec.cuh"

KVC_CUDA_NAMESPACE_BEGIN

namespace {

constexpr unsigned kWarps = 4;
constexpr float kNegInf = -__builtin_huge_valf();

// Lane layout for head_dim D: a row is handled by kLanes lanes holding kElems consecutive
// elements each; a warp covers 32 / kLanes rows at once, so head_dim 8 still uses all lanes.
template <int D>
struct Layout {
  static constexpr int kLanes = D < 32 ? D : 32;
  static constexpr int kElems = D / kLanes;
  static constexpr int kRowsPerWarp = 32 / kLanes;
  static constexpr int kSubgroups = kWarps * kRowsPerWarp;
  static_assert(D % kLanes == 0 && 32 % kLanes == 0, "unsupported head_dim");
};

struct RowRef {
  const uint8_t* key;
  const uint8_t* value;
  float beta;
  bool visible;
};

__device__ __forceinline__ RowRef locateRow(const AttentionArgs& a, const AttentionStreamArgs& st, int32_t r,
                                            int32_t cutoff) {
  RowRef ref{nullptr, nullptr, 0.0f, false};
  if (r >= st.length) return ref;
  const BlockLayout& L = a.pool.layout;
  const int32_t block = st.blockTable[r / static_cast<int32_t>(L.blockSize)];
  const uint32_t slot = static_cast<uint32_t>(r) % L.blockSize;
  const uint8_t* base = a.pool.base + static_cast<uint64_t>(block) * L.blockBytes;
  ref.visible = reinterpret_cast<const int32_t*>(base + L.positionsOffset)[slot] <= cutoff;
  ref.beta = reinterpret_cast<const float*>(base + L.betaOffset)[slot];
  ref.key = base + slot * L.keyRowBytes;
  ref.value = base + L.valuesOffset + slot * L.valueRowBytes;
  return ref;
}

// scale * q.k + beta for the row of this subgroup; every lane of the warp must call it
// (the reduction shuffles with the full mask). Invisible rows return -inf.
template <int D>
__device__ __forceinline__ float rowLogit(const AttentionArgs& a, const RowRef& row, const float (&q)[Layout<D>::kElems],
                                          unsigned subLane) {
  using Lay = Layout<D>;
  float dot = 0.0f;
  if (row.visible) {
    KVC_UNROLL
    for (int i = 0; i < Lay::kElems; ++i) {
      dot += q[i] * decodeElement(row.key, a.codec.keyStorage, D, a.codec.groupSize, subLane * Lay::kElems + i);
    }
  }
  KVC_UNROLL
  for (int offset = Lay::kLanes / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xFFFFFFFFu, dot, offset);
  return row.visible ? a.scale * dot + row.beta : kNegInf;
}

// Grid (S, tq); 128 threads. Query heads of the GQA group are processed one after another,
// each over all rows, with the 4 * kRowsPerWarp subgroups' partial softmax states merged
// through shared memory.
template <int D>
__global__ KVC_LAUNCH_BOUNDS(128, 4) void attentionKernel(AttentionArgs a) {
  using Lay = Layout<D>;
  __shared__ float qShared[D];
  __shared__ float outShared[D];
  __shared__ float mShared[Lay::kSubgroups];
  __shared__ float lShared[Lay::kSubgroups];
  __shared__ float accShared[Lay::kSubgroups][D];
  __shared__ float totals[2];  // final max and sum of the current head

  const unsigned s = blockIdx.x, t = blockIdx.y;
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const unsigned sub = lane / Lay::kLanes, subLane = lane % Lay::kLanes;
  const unsigned subgroup = warp * Lay::kRowsPerWarp + sub;
  const AttentionStreamArgs st = a.streams[s];
  int32_t cutoff;
  if (a.queryPositions) {
    cutoff = a.queryPositions[s * a.tq + t];
  } else {
    // Query t sits at the position of row length - tq + t of its stream.
    const uint32_t row = static_cast<uint32_t>(st.length) - a.tq + t;
    const uint8_t* block = a.pool.base + static_cast<uint64_t>(st.blockTable[row / a.pool.layout.blockSize]) * a.pool.layout.blockBytes;
    cutoff = reinterpret_cast<const int32_t*>(block + a.pool.layout.positionsOffset)[row % a.pool.layout.blockSize];
  }
  const uint32_t G = a.queriesPerHead;

  for (uint32_t g = 0; g < G; ++g) {
    const size_t head = (static_cast<size_t>(s) * a.tq + t) * G + g;
    for (unsigned d = threadIdx.x; d < D; d += blockDim.x) qShared[d] = a.queries[head * D + d];
    // Keys are stored rotated; q.k is preserved when q is rotated the same way.
    if (a.codec.keySigns) {
      rotateForward(qShared, a.codec.keySigns, D, threadIdx.x, blockDim.x, BlockSync());
    } else {
      __syncthreads();
    }
    float q[Lay::kElems];
    KVC_UNROLL
    for (int i = 0; i < Lay::kElems; ++i) q[i] = qShared[subLane * Lay::kElems + i];

    float m = kNegInf, l = 0.0f, acc[Lay::kElems];
    KVC_UNROLL
    for (int i = 0; i < Lay::kElems; ++i) acc[i] = 0.0f;

    // Warp-uniform trip count: the rows of a step are base + sub for all subgroups.
    for (int32_t base = static_cast<int32_t>(warp * Lay::kRowsPerWarp); base < st.length;
         base += static_cast<int32_t>(Lay::kSubgroups)) {
      const RowRef row = locateRow(a, st, base + static_cast<int32_t>(sub), cutoff);
      const float logit = rowLogit<D>(a, row, q, subLane);
      if (logit != kNegInf) {
        const float mNew = fmaxf(m, logit);
        const float correction = __expf(m - mNew);  // 0 on the first visible row (m = -inf)
        const float p = __expf(logit - mNew);
        l = l * correction + p;
        KVC_UNROLL
        for (int i = 0; i < Lay::kElems; ++i) {
          const float v =
              decodeElement(row.value, a.codec.valueStorage, D, a.codec.groupSize, subLane * Lay::kElems + i);
          acc[i] = acc[i] * correction + p * v;
        }
        m = mNew;
      }
    }
    KVC_UNROLL
    for (int i = 0; i < Lay::kElems; ++i) accShared[subgroup][subLane * Lay::kElems + i] = acc[i];
    if (subLane == 0) {
      mShared[subgroup] = m;
      lShared[subgroup] = l;
    }
    __syncthreads();

    float M = kNegInf;
    for (int i = 0; i < Lay::kSubgroups; ++i) M = fmaxf(M, mShared[i]);
    float Lsum = 0.0f;
    if (M != kNegInf) {
      for (int i = 0; i < Lay::kSubgroups; ++i) Lsum += lShared[i] * __expf(mShared[i] - M);
    }
    for (unsigned d = threadIdx.x; d < D; d += blockDim.x) {
      float o = 0.0f;
      if (Lsum > 0.0f) {
        for (int i = 0; i < Lay::kSubgroups; ++i) o += accShared[i][d] * __expf(mShared[i] - M);
        o /= Lsum;
      }
      outShared[d] = o;  // no visible row: output 0, lse -inf
    }
    if (threadIdx.x == 0) {
      totals[0] = M;
      totals[1] = Lsum;
    }
    if (a.codec.valueSigns) {
      rotateInverse(outShared, a.codec.valueSigns, D, threadIdx.x, blockDim.x, BlockSync());
    } else {
      __syncthreads();
    }
    for (unsigned d = threadIdx.x; d < D; d += blockDim.x) a.out[head * D + d] = outShared[d];
    if (threadIdx.x == 0) a.lse[head] = Lsum > 0.0f ? M + logf(Lsum) : kNegInf;

    // Attention mass: a second pass once the head's normalizer is known.
    if (st.scores && Lsum > 0.0f) {
      const float finalMax = totals[0], invSum = 1.0f / totals[1];
      for (int32_t base = static_cast<int32_t>(warp * Lay::kRowsPerWarp); base < st.length;
           base += static_cast<int32_t>(Lay::kSubgroups)) {
        const int32_t r = base + static_cast<int32_t>(sub);
        const RowRef row = locateRow(a, st, r, cutoff);
        const float logit = rowLogit<D>(a, row, q, subLane);
        if (logit != kNegInf && subLane == 0) atomicAdd(&st.scores[r], __expf(logit - finalMax) * invSum);
      }
    }
    __syncthreads();  // shared state is rewritten by the next head
  }
}

template <int D>
cudaError_t launchForHeadDim(const AttentionArgs& a, cudaStream_t stream) {
  auto kernel = attentionKernel<D>;
  KVC_LAUNCH(kernel, dim3(a.streamCount, a.tq), dim3(32 * kWarps), 0, stream)(a);
  return cudaGetLastError();
}

}  // namespace

bool attentionSupportsHeadDim(uint32_t headDim) {
  switch (headDim) {
    case 8: case 16: case 32: case 64: case 96: case 128: case 256: return true;
    default: return false;
  }
}

cudaError_t launchAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.streamCount == 0 || a.tq == 0) return cudaSuccess;
  switch (a.codec.headDim) {
    case 8: return launchForHeadDim<8>(a, stream);
    case 16: return launchForHeadDim<16>(a, stream);
    case 32: return launchForHeadDim<32>(a, stream);
    case 64: return launchForHeadDim<64>(a, stream);
    case 96: return launchForHeadDim<96>(a, stream);
    case 128: return launchForHeadDim<128>(a, stream);
    case 256: return launchForHeadDim<256>(a, stream);
    default: return cudaErrorInvalidValue;  // callers check attentionSupportsHeadDim first
  }
}

KVC_CUDA_NAMESPACE_END
