// The tensor-core split kernel of decode attention (included by attention.cu): q·k and p·v as
// warp-level m16n8k16 f16 tile products (mma.cuh) on exact operands, for head_dim 64 and 128
// and keys and values stored as f16, int8 or int4.
//
// Why: with f32 FMAs on CUDA cores, every stored element costs one FMA per query head of the
// GQA group plus its dequantization; at GQA 4 an int4 row at the bandwidth floor needs more
// instructions than an H100 issues (cuda/PERFORMANCE.md). Here a warp does the 16 rows × 16
// elements × 8 columns of a tile product in one instruction, and dequantization is integer
// bit work on packed pairs:
//   - operands are exact: int8 / int4 codes and f16 values are exact in f16; the query is
//     scaled by a power of two (its largest |x| into [2^14, 2^15)) and split into hi + lo f16
//     halves, the 8 columns of B being 4 query rows × (hi, lo); the softmax weights likewise,
//     premultiplied by the row's value scale and a power of two per tile and group;
//   - the scale (and int4 min) of a quantization group is applied per group after the tile
//     product: q·k = Σ_groups (s_g Σ q_d c_d + m_g Σ q_d), and Σ_rows p (s c + m) = Σ (p s) c + Σ p m,
//     so every group of 16 elements stays a product of exact f16 operands;
//   - the order in which a tile product pairs elements with k-slots is free as long as both
//     operands use the same one: keys take the pairs the packed bytes give (bytes 0 and 2 of
//     a word, then 1 and 3), values pair two rows of the same element (one byte permute).
// Each warp streams its own 16-row tiles of the split (tiles w, w + 4, ...) with 16-byte
// cp.async, double-buffered per warp, and keeps its own online-softmax state; the four warps
// merge once at the end. A tile never leaves its pool block (blockSize % 16 == 0).
//
// Accuracy: on the emulator the tile products sum in k order in f32, and hi + lo keep 22 bits
// of each f32 operand, so logits and outputs match the CUDA-core kernel to a few f32 ulps.
// It is included inside attention.cu's anonymous namespace, after the shared constants.

constexpr uint32_t kMmaRows = 16;       // rows per warp tile (the m16 of the tile product)
constexpr uint32_t kMmaQueryRows = 4;   // query rows per block: 4 × (hi, lo) = the n8 of B

constexpr bool mmaStorage(Storage s) { return s == Storage::kF16 || s == Storage::kInt8 || s == Storage::kInt4; }

// Whether the tensor-core kernel serves these arguments (otherwise the CUDA-core one does).
bool mmaEligible(const AttentionArgs& a) {
  const RowCodec& c = a.codec;
  const uint32_t D = c.headDim, G = c.groupSize;
  if (D != 64 && D != 128) return false;
  if (a.ropeDims != 0) return false;  // keys stored before RoPE: the CUDA-core kernel rotates q per row
  if (!mmaStorage(c.keyStorage) || !mmaStorage(c.valueStorage)) return false;
  if (a.pool.layout.blockSize % kMmaRows != 0 || kAttentionSplitRows % kMmaRows != 0) return false;
  // Quantized formats: the group size is a template parameter (32 or 64), so that every index
  // in the unrolled loops is a constant.
  const bool quantized = c.keyStorage != Storage::kF16 || c.valueStorage != Storage::kF16;
  return !quantized || ((G == 32 || G == 64) && D % G == 0);
}

// ---- per-format operands -----------------------------------------------------------------
// Keys: k-step u (elements of one quantization group) gives lane t the pairs (d0, d1) and
// (d2, d3) of a row: registers a[0]/a[2] (row g) and a[1]/a[3] (row g + 8) of the tile product.
template <Storage S>
struct KeyOperand;

template <>
struct KeyOperand<Storage::kF16> {
  KVC_DEVICE static void dims(uint32_t u, uint32_t t, uint32_t, uint32_t (&d)[4]) {
    d[0] = 16 * u + 2 * t, d[1] = d[0] + 1, d[2] = d[0] + 8, d[3] = d[0] + 9;
  }
  KVC_DEVICE static void pairs(const uint8_t* row, uint32_t u, uint32_t t, uint32_t, uint32_t, uint32_t& p0, uint32_t& p1) {
    p0 = *reinterpret_cast<const uint32_t*>(row + 2 * (16 * u + 2 * t));
    p1 = *reinterpret_cast<const uint32_t*>(row + 2 * (16 * u + 2 * t + 8));
  }
  KVC_DEVICE static float scale(const uint8_t*, uint32_t, uint32_t) { return 1.0f; }
  KVC_DEVICE static float offset(const uint8_t*, uint32_t, uint32_t) { return 0.0f; }
  static constexpr bool kGrouped = false;
  static constexpr bool kOffset = false;
};

template <>
struct KeyOperand<Storage::kInt8> {
  // Word 4u + t holds elements 16u + 4t .. +3; bytes (0, 2) and (1, 3) make the pairs.
  KVC_DEVICE static void dims(uint32_t u, uint32_t t, uint32_t, uint32_t (&d)[4]) {
    d[0] = 16 * u + 4 * t, d[1] = d[0] + 2, d[2] = d[0] + 1, d[3] = d[0] + 3;
  }
  KVC_DEVICE static void pairs(const uint8_t* row, uint32_t u, uint32_t t, uint32_t, uint32_t, uint32_t& p0, uint32_t& p1) {
    const uint32_t w = *reinterpret_cast<const uint32_t*>(row + 16 * u + 4 * t);
    p0 = int8Pair(w);
    p1 = int8Pair(w >> 8);
  }
  KVC_DEVICE static float scale(const uint8_t* row, uint32_t D, uint32_t g) { return loadHalf(loadU16(row + D + 2 * g)); }
  KVC_DEVICE static float offset(const uint8_t*, uint32_t, uint32_t) { return 0.0f; }
  static constexpr bool kGrouped = true;
  static constexpr bool kOffset = false;
};

template <>
struct KeyOperand<Storage::kInt4> {
  // Group g's codes are G/2 bytes: byte j holds element j (low nibble) and j + G/2 (high).
  // k-step u = (group, word round r, nibble s): lane t reads word t + 4r of the group;
  // s = 0 takes the low nibbles, s = 1 the high ones.
  KVC_DEVICE static void dims(uint32_t u, uint32_t t, uint32_t G, uint32_t (&d)[4]) {
    const uint32_t perGroup = G / 16, g = u / perGroup, j = u % perGroup, r = j / 2, s = j % 2;
    d[0] = g * G + s * (G / 2) + 4 * (t + 4 * r), d[1] = d[0] + 2, d[2] = d[0] + 1, d[3] = d[0] + 3;
  }
  KVC_DEVICE static void pairs(const uint8_t* row, uint32_t u, uint32_t t, uint32_t, uint32_t G, uint32_t& p0, uint32_t& p1) {
    const uint32_t perGroup = G / 16, g = u / perGroup, j = u % perGroup, r = j / 2, s = j % 2;
    const uint32_t w = *reinterpret_cast<const uint32_t*>(row + g * (G / 2) + 4 * (t + 4 * r));
    p0 = s ? int4HighPair(w) : int4LowPair(w);
    p1 = s ? int4HighPair(w >> 8) : int4LowPair(w >> 8);
  }
  KVC_DEVICE static float scale(const uint8_t* row, uint32_t D, uint32_t g) { return loadHalf(loadU16(row + D / 2 + 4 * g)); }
  KVC_DEVICE static float offset(const uint8_t* row, uint32_t D, uint32_t g) { return loadHalf(loadU16(row + D / 2 + 4 * g + 2)); }
  static constexpr bool kGrouped = true;
  static constexpr bool kOffset = true;
};

// Values: m-block b (16 elements of one group) pairs rows (r, r + 1) of one element: lane g's
// slots g and g + 8 are elements base(b) + 2g and base(b) + 2g + 1.
template <Storage S>
struct ValueOperand;

template <>
struct ValueOperand<Storage::kF16> {
  KVC_DEVICE static uint32_t base(uint32_t b, uint32_t) { return 16 * b; }
  KVC_DEVICE static uint32_t group(uint32_t, uint32_t) { return 0; }
  KVC_DEVICE static uint32_t word(const uint8_t* row, uint32_t b, uint32_t lg, uint32_t) {
    return *reinterpret_cast<const uint32_t*>(row + 2 * (16 * b + 2 * lg));
  }
  // Pairs (row x, row y) of slot g and slot g + 8 from the two rows' words.
  KVC_DEVICE static void pairs(uint32_t wx, uint32_t wy, uint32_t, uint32_t, uint32_t& s0, uint32_t& s8) {
    s0 = bytePerm(wx, wy, 0x5410u);
    s8 = bytePerm(wx, wy, 0x7632u);
  }
  KVC_DEVICE static float scale(const uint8_t*, uint32_t, uint32_t) { return 1.0f; }
  KVC_DEVICE static float offset(const uint8_t*, uint32_t, uint32_t) { return 0.0f; }
  static constexpr bool kGrouped = false;
  static constexpr bool kOffset = false;
};

template <>
struct ValueOperand<Storage::kInt8> {
  KVC_DEVICE static uint32_t base(uint32_t b, uint32_t) { return 16 * b; }
  KVC_DEVICE static uint32_t group(uint32_t b, uint32_t G) { return 16 * b / G; }
  KVC_DEVICE static uint32_t word(const uint8_t* row, uint32_t b, uint32_t lg, uint32_t) {
    return *reinterpret_cast<const uint32_t*>(row + 16 * b + 4 * (lg / 2));
  }
  KVC_DEVICE static void pairs(uint32_t wx, uint32_t wy, uint32_t lg, uint32_t, uint32_t& s0, uint32_t& s8) {
    const uint32_t o = 2 * (lg % 2);  // bytes o (element 2g) and o + 1 (element 2g + 1) of each word
    s0 = int8Pair(bytePerm(wx, wy, o | (o << 4) | ((4 + o) << 8) | ((4 + o) << 12)));
    s8 = int8Pair(bytePerm(wx, wy, (o + 1) | ((o + 1) << 4) | ((5 + o) << 8) | ((5 + o) << 12)));
  }
  KVC_DEVICE static float scale(const uint8_t* row, uint32_t D, uint32_t g) { return loadHalf(loadU16(row + D + 2 * g)); }
  KVC_DEVICE static float offset(const uint8_t*, uint32_t, uint32_t) { return 0.0f; }
  static constexpr bool kGrouped = true;
  static constexpr bool kOffset = false;
};

template <>
struct ValueOperand<Storage::kInt4> {
  // m-block b = (group, 16-byte window w, nibble h): elements g·G + h·G/2 + 16w + (2lg, 2lg + 1),
  // read from bytes 16w + 2lg, +1 of the group's codes.
  KVC_DEVICE static uint32_t base(uint32_t b, uint32_t G) {
    const uint32_t perGroup = G / 16, g = b / perGroup, j = b % perGroup;
    return g * G + (j % 2) * (G / 2) + 16 * (j / 2);
  }
  KVC_DEVICE static uint32_t group(uint32_t b, uint32_t G) { return b / (G / 16); }
  KVC_DEVICE static uint32_t word(const uint8_t* row, uint32_t b, uint32_t lg, uint32_t G) {
    const uint32_t perGroup = G / 16, g = b / perGroup, j = b % perGroup;
    return *reinterpret_cast<const uint32_t*>(row + g * (G / 2) + 16 * (j / 2) + 4 * (lg / 2));
  }
  KVC_DEVICE static void pairs(uint32_t wx, uint32_t wy, uint32_t lg, uint32_t b, uint32_t& s0, uint32_t& s8) {
    const uint32_t o = 2 * (lg % 2);
    // x = (row x byte o, row x byte o + 1, row y byte o, row y byte o + 1): bytes 0 and 2 pair
    // the rows for element 2lg, bytes 1 and 3 for element 2lg + 1.
    const uint32_t x = bytePerm(wx, wy, o | ((o + 1) << 4) | ((4 + o) << 8) | ((5 + o) << 12));
    if (b % 2 == 0) {
      s0 = int4LowPair(x);
      s8 = int4LowPair(x >> 8);
    } else {
      s0 = int4HighPair(x);
      s8 = int4HighPair(x >> 8);
    }
  }
  KVC_DEVICE static float scale(const uint8_t* row, uint32_t D, uint32_t g) { return loadHalf(loadU16(row + D / 2 + 4 * g)); }
  KVC_DEVICE static float offset(const uint8_t* row, uint32_t D, uint32_t g) { return loadHalf(loadU16(row + D / 2 + 4 * g + 2)); }
  static constexpr bool kGrouped = true;
  static constexpr bool kOffset = true;
};

// 2^e as a float (e in [-126, 127]).
KVC_DEVICE float pow2(int e) { return __int_as_float((127 + e) << 23); }
// floor(log2 |x|) of a normal float.
KVC_DEVICE int exponentOf(float x) { return static_cast<int>((__float_as_uint(x) >> 23) & 0xFFu) - 127; }

// Dynamic shared memory of the tensor-core kernel (16-byte aligned offsets):
//   q      float[4][D]          the block's query rows, rotated like the keys, scaled by 2^-e
//   qexp   int32[4]; cutoff int32[4]
//   p      float[warps][4][16]  each warp's logits, then softmax weights, of its current tile
//   region per warp two stages (keys | values | beta[16] | positions[16]); afterwards
//          float[warps][4][D + 2] for the merge of the warps' states
struct MmaPlan {
  uint32_t keyBuf = 0, valueBuf = 0, stageBytes = 0;
  uint32_t oQexp = 0, oP = 0, oRegion = 0, total = 0;
};

MmaPlan planMma(const AttentionArgs& a) {
  const BlockLayout& L = a.pool.layout;
  const uint32_t D = a.codec.headDim;
  MmaPlan p;
  p.keyBuf = alignUp(kMmaRows * L.keyRowBytes + 32, 16);
  p.valueBuf = alignUp(kMmaRows * L.valueRowBytes + 32, 16);
  p.stageBytes = p.keyBuf + p.valueBuf + 2 * 4 * kMmaRows;
  p.oQexp = alignUp(kMmaQueryRows * D * 4, 16);
  p.oP = p.oQexp + 32;
  p.oRegion = p.oP + kWarps * kMmaQueryRows * kMmaRows * 4;
  const uint32_t pipeline = kWarps * 2 * p.stageBytes, merge = kWarps * kMmaQueryRows * (D + 2) * 4;
  p.total = p.oRegion + (pipeline > merge ? pipeline : merge);
  return p;
}

// Grid: W * ceil(M / 4) blocks (split b / qTiles, query rows (b % qTiles) * 4 ..). Writes the
// same partial states (and logits) as attentionSplitKernel.
template <Storage KS, Storage VS, int D, int GS>
__global__ KVC_LAUNCH_BOUNDS(kThreads, 3) void attentionMmaKernel(AttentionArgs a, MmaPlan plan) {
  using K = KeyOperand<KS>;
  using V = ValueOperand<VS>;
  constexpr uint32_t QR = kMmaQueryRows, kSteps = D / 16, kBlocks = D / 16;
  KVC_DYNAMIC_SHARED(unsigned char, smem);
  float* qS = reinterpret_cast<float*>(smem);
  int32_t* qexpS = reinterpret_cast<int32_t*>(smem + plan.oQexp);
  int32_t* cutS = qexpS + QR;
  const BlockLayout& L = a.pool.layout;
  constexpr uint32_t G = K::kGrouped || V::kGrouped ? GS : D;
  const uint32_t M = a.tq * a.queriesPerHead, qTiles = (M + QR - 1) / QR;
  const uint32_t workIndex = blockIdx.x / qTiles, n0 = (blockIdx.x % qTiles) * QR;
  const uint32_t qRows = M - n0 < QR ? M - n0 : QR;
  const AttentionWork work = a.work[workIndex];
  const AttentionStreamArgs st = a.streams[work.stream];
  const unsigned tid = threadIdx.x, warp = tid / 32, lane = tid % 32, lg = lane / 4, lt = lane % 4;
  const int32_t bs = static_cast<int32_t>(L.blockSize);
  float* pS = reinterpret_cast<float*>(smem + plan.oP) + warp * QR * kMmaRows;
  unsigned char* region = smem + plan.oRegion;

  for (uint32_t i = tid; i < QR * D; i += kThreads) {
    const uint32_t j = i / D, d = i % D;
    qS[i] = j < qRows ? a.queries[(static_cast<size_t>(work.stream) * M + n0 + j) * D + d] : 0.0f;
  }
  if (tid < QR) cutS[tid] = tid < qRows ? queryCutoff(a, st, work.stream, n0 + tid) : INT_MIN;
  __syncthreads();
  if (a.codec.keySigns) {
    for (uint32_t j = warp; j < qRows; j += kWarps) rotateForward(qS + j * D, a.codec.keySigns, D, lane, 32, WarpSync());
    __syncthreads();
  }
  // Scale each query row by 2^-e so that its largest |x| lies in [2^14, 2^15) (hi + lo stay normal f16).
  for (uint32_t j = warp; j < QR; j += kWarps) {
    float mx = 0.0f;
    for (uint32_t d = lane; d < D; d += 32) mx = fmaxf(mx, fabsf(qS[j * D + d]));
    KVC_UNROLL
    for (uint32_t off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, off));
    const int e = mx > 0.0f && mx < 3.0e38f ? exponentOf(mx) - 14 : 0;
    const int ec = e < -100 ? -100 : (e > 100 ? 100 : e);
    __syncwarp();
    for (uint32_t d = lane; d < D; d += 32) qS[j * D + d] *= pow2(-ec);
    if (lane == 0) qexpS[j] = ec;
  }
  __syncthreads();

  // B of q·k: column lg = query row (lg % 4), part lg / 4 (0: hi, 1: lo), k-slots as KeyOperand.
  const uint32_t bRow = lg % 4, bPart = lg / 4;
  uint32_t qB[kSteps][2];
  KVC_UNROLL
  for (uint32_t u = 0; u < kSteps; ++u) {
    uint32_t d[4];
    K::dims(u, lt, G, d);
    uint16_t h[4];
    KVC_UNROLL
    for (int i = 0; i < 4; ++i) {
      uint16_t hi, lo;
      splitHalf(qS[bRow * D + d[i]], &hi, &lo);
      h[i] = bPart ? lo : hi;
    }
    qB[u][0] = packHalves(h[0], h[1]);
    qB[u][1] = packHalves(h[2], h[3]);
  }
  // Σ_d∈group q_d of the two query rows of this lane's C columns (2lt, 2lt + 1 -> rows 2lt % 4,
  // (2lt + 1) % 4), for the int4 key offset; zero in the lo columns.
  constexpr uint32_t kMaxGroups = D / 32 > 0 ? D / 32 : 1;
  float qSum[kMaxGroups][2];
  KVC_UNROLL
  for (uint32_t g = 0; g < kMaxGroups; ++g) qSum[g][0] = qSum[g][1] = 0.0f;
  if (K::kOffset && lt < 2) {
    KVC_UNROLL
    for (uint32_t g = 0; g < D / G; ++g) {
      KVC_UNROLL
      for (uint32_t c = 0; c < 2; ++c) {
        float s = 0.0f;
        for (uint32_t d = 0; d < G; ++d) s += qS[(2 * lt + c) * D + g * G + d];
        KVC_UNROLL
        for (uint32_t gg = 0; gg < kMaxGroups; ++gg)
          if (gg == g) qSum[gg][c] = s;
      }
    }
  }
  // Per C column: the query row and its logit factor scale · 2^e.
  float colFactor[2];
  KVC_UNROLL
  for (uint32_t c = 0; c < 2; ++c) colFactor[c] = a.scale * pow2(qexpS[(2 * lt + c) % 4]);

  // This warp's online softmax: lane l tracks query row l / 8.
  float mRun = kNegInf, lRun = 0.0f;
  // acc[b][i]: C layout of m-block b (slots lg, lg + 8; columns 2lt, 2lt + 1).
  float acc[kBlocks][4];
  KVC_UNROLL
  for (uint32_t b = 0; b < kBlocks; ++b) acc[b][0] = acc[b][1] = acc[b][2] = acc[b][3] = 0.0f;
  // Σ p·offset per group for query row lg (lanes lg < 4), per lane's rows; summed over lt at the end.
  float offAcc[kMaxGroups];
  KVC_UNROLL
  for (uint32_t g = 0; g < kMaxGroups; ++g) offAcc[g] = 0.0f;

  const int32_t rowBegin = work.rowBegin, rowEnd = work.rowEnd;
  const int32_t tiles = (rowEnd - rowBegin + static_cast<int32_t>(kMmaRows) - 1) / static_cast<int32_t>(kMmaRows);
  unsigned char* myStages = region + warp * 2 * plan.stageBytes;
  auto issue = [&](int32_t tile, uint32_t stage) {
    const int32_t r0 = rowBegin + tile * static_cast<int32_t>(kMmaRows);
    const int32_t r1 = r0 + static_cast<int32_t>(kMmaRows) < rowEnd ? r0 + static_cast<int32_t>(kMmaRows) : rowEnd;
    const uint8_t* base = a.pool.base + static_cast<uint64_t>(st.blockTable[r0 / bs]) * L.blockBytes;
    const uint32_t slot0 = static_cast<uint32_t>(r0 % bs), n = static_cast<uint32_t>(r1 - r0);
    unsigned char* dst = myStages + stage * plan.stageBytes;
    const uint32_t k0 = (slot0 * L.keyRowBytes) & ~15u, k1 = alignUp((slot0 + n) * L.keyRowBytes, 16);
    for (uint32_t off = k0 + 16 * lane; off < k1; off += 16 * 32) copyAsync16(dst + (off - k0), base + off);
    dst += plan.keyBuf;
    const uint8_t* values = base + L.valuesOffset;
    const uint32_t v0 = (slot0 * L.valueRowBytes) & ~15u, v1 = alignUp((slot0 + n) * L.valueRowBytes, 16);
    for (uint32_t off = v0 + 16 * lane; off < v1; off += 16 * 32) copyAsync16(dst + (off - v0), values + off);
    dst += plan.valueBuf;
    if (lane < n) {
      copyAsync4(dst + 4 * lane, base + L.betaOffset + 4 * (slot0 + lane));
      copyAsync4(dst + 4 * (kMmaRows + lane), base + L.positionsOffset + 4 * (slot0 + lane));
    }
    commitAsync();
  };

  uint32_t stage = 0;
  int32_t tile = static_cast<int32_t>(warp);
  if (tile < tiles) issue(tile, 0);
  for (; tile < tiles; tile += kWarps) {
    const int32_t next = tile + static_cast<int32_t>(kWarps);
    if (next < tiles) {
      issue(next, stage ^ 1u);
      waitAsync<1>();
    } else {
      waitAsync<0>();
    }
    __syncwarp();
    const int32_t r0 = rowBegin + tile * static_cast<int32_t>(kMmaRows);
    const uint32_t n = static_cast<uint32_t>((rowEnd - r0) < static_cast<int32_t>(kMmaRows) ? rowEnd - r0 : static_cast<int32_t>(kMmaRows));
    const uint32_t slot0 = static_cast<uint32_t>(r0 % bs);
    const unsigned char* keys = myStages + stage * plan.stageBytes;
    const unsigned char* values = keys + plan.keyBuf;
    const float* betaT = reinterpret_cast<const float*>(values + plan.valueBuf);
    const int32_t* posT = reinterpret_cast<const int32_t*>(betaT + kMmaRows);
    keys += slot0 * L.keyRowBytes - ((slot0 * L.keyRowBytes) & ~15u);
    values += slot0 * L.valueRowBytes - ((slot0 * L.valueRowBytes) & ~15u);

    // ---- logits of rows lg and lg + 8 for columns 2lt, 2lt + 1 ----
    const uint8_t* rowA = keys + lg * L.keyRowBytes;
    const uint8_t* rowB = keys + (lg + 8) * L.keyRowBytes;
    float total[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    constexpr uint32_t stepsPerGroup = K::kGrouped ? G / 16 : kSteps;
    {
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      KVC_UNROLL
      for (uint32_t u = 0; u < kSteps; ++u) {
        uint32_t af[4];
        K::pairs(rowA, u, lt, D, G, af[0], af[2]);
        K::pairs(rowB, u, lt, D, G, af[1], af[3]);
        mmaF16(c, af, qB[u]);
        if (!K::kGrouped || (u + 1) % stepsPerGroup != 0) continue;
        // The group ends here: s_g Σ q·c (+ m_g Σ q), then a fresh product for the next group.
        const uint32_t g = u / stepsPerGroup;
        const float sA = K::scale(rowA, D, g), sB = K::scale(rowB, D, g);
        total[0] += sA * c[0];
        total[1] += sA * c[1];
        total[2] += sB * c[2];
        total[3] += sB * c[3];
        if (K::kOffset) {
          const float mA = K::offset(rowA, D, g), mB = K::offset(rowB, D, g);
          float s0 = 0.0f, s1 = 0.0f;
          KVC_UNROLL
          for (uint32_t gg = 0; gg < kMaxGroups; ++gg)
            if (gg == g) s0 = qSum[gg][0], s1 = qSum[gg][1];
          total[0] += mA * s0;
          total[1] += mA * s1;
          total[2] += mB * s0;
          total[3] += mB * s1;
        }
        c[0] = c[1] = c[2] = c[3] = 0.0f;
      }
      if (!K::kGrouped) {
        KVC_UNROLL
        for (int i = 0; i < 4; ++i) total[i] = c[i];
      }
    }
    // Columns 2lt, 2lt + 1 of lanes lt < 2 are hi parts, of lanes lt >= 2 the lo parts of the same rows.
    KVC_UNROLL
    for (int i = 0; i < 4; ++i) total[i] += __shfl_xor_sync(0xFFFFFFFFu, total[i], 2);
    if (lt < 2) {
      KVC_UNROLL
      for (uint32_t i = 0; i < 4; ++i) {
        const uint32_t r = lg + 8 * (i / 2), j = 2 * lt + i % 2;
        float logit = kNegInf;
        if (r < n && j < qRows && posT[r] <= cutS[j]) logit = colFactor[i % 2] * total[i] + betaT[r];
        pS[j * kMmaRows + r] = logit;
        if (st.logits && r < n && j < qRows) st.logits[static_cast<size_t>(n0 + j) * st.length + r0 + r] = logit;
      }
    }
    __syncwarp();
    // ---- online softmax: lane l has query row l / 8, tile rows 2(l % 8), +1 ----
    float corr;
    {
      const uint32_t j = lane / 8, r = 2 * (lane % 8);
      const float x0 = pS[j * kMmaRows + r], x1 = pS[j * kMmaRows + r + 1];
      float tileMax = fmaxf(x0, x1);
      KVC_UNROLL
      for (uint32_t off = 4; off > 0; off /= 2) tileMax = fmaxf(tileMax, __shfl_xor_sync(0xFFFFFFFFu, tileMax, off));
      const float mNew = fmaxf(mRun, tileMax);
      const float p0 = x0 == kNegInf ? 0.0f : __expf(x0 - mNew), p1 = x1 == kNegInf ? 0.0f : __expf(x1 - mNew);
      float sum = p0 + p1;
      KVC_UNROLL
      for (uint32_t off = 4; off > 0; off /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, off);
      corr = mNew == kNegInf ? 1.0f : __expf(mRun - mNew);
      lRun = lRun * corr + sum;
      mRun = mNew;
      __syncwarp();
      pS[j * kMmaRows + r] = p0;
      pS[j * kMmaRows + r + 1] = p1;
    }
    __syncwarp();
    // The rescale factor of each accumulator column (query rows 2lt % 4, (2lt + 1) % 4) and of
    // this lane's offset sums (query row lg % 4).
    const float corr0 = __shfl_sync(0xFFFFFFFFu, corr, 8 * ((2 * lt) % 4));
    const float corr1 = __shfl_sync(0xFFFFFFFFu, corr, 8 * ((2 * lt + 1) % 4));
    const float corrOff = __shfl_sync(0xFFFFFFFFu, corr, 8 * (lg % 4));

    // ---- acc += p·v: A = Vᵀ (slots × rows), B = p·s·2^E (rows × columns) per group ----
    const uint32_t rows[4] = {2 * lt, 2 * lt + 1, 2 * lt + 8, 2 * lt + 9};
    const uint8_t* vRow[4];
    float p[4];
    KVC_UNROLL
    for (int i = 0; i < 4; ++i) {
      vRow[i] = values + rows[i] * L.valueRowBytes;
      p[i] = rows[i] < n ? pS[bRow * kMmaRows + rows[i]] : 0.0f;
    }
    // One power of two for the tile: E puts the largest row scale of any group at 2^14, so
    // p·s·2^E < 2^15 stays in f16 range and its lo part stays normal where it matters.
    float sMax = 0.0f;
    if (V::kGrouped) {
      KVC_UNROLL
      for (uint32_t g = 0; g < D / G; ++g) {
        KVC_UNROLL
        for (int i = 0; i < 4; ++i) sMax = rows[i] < n ? fmaxf(sMax, fabsf(V::scale(vRow[i], D, g))) : sMax;
      }
      sMax = fmaxf(sMax, __shfl_xor_sync(0xFFFFFFFFu, sMax, 1));
      sMax = fmaxf(sMax, __shfl_xor_sync(0xFFFFFFFFu, sMax, 2));
    } else {
      sMax = 1.0f;
    }
    int e = sMax > 0.0f && sMax < 3.0e38f ? 14 - exponentOf(sMax) : 0;
    e = e < -100 ? -100 : (e > 100 ? 100 : e);
    const float up = pow2(e), unscale = pow2(-e);
    // The running max moved (mostly in the first tiles only): rescale what was accumulated.
    if (__any_sync(0xFFFFFFFFu, corr != 1.0f)) {
      KVC_UNROLL
      for (uint32_t b = 0; b < kBlocks; ++b) {
        acc[b][0] *= corr0;
        acc[b][1] *= corr1;
        acc[b][2] *= corr0;
        acc[b][3] *= corr1;
      }
      KVC_UNROLL
      for (uint32_t g = 0; g < kMaxGroups; ++g) offAcc[g] *= corrOff;
    }
    uint32_t bW[2] = {0u, 0u};
    uint32_t lastGroup = 0xFFFFFFFFu;
    KVC_UNROLL
    for (uint32_t b = 0; b < kBlocks; ++b) {
      const uint32_t g = V::group(b, G);
      if (g != lastGroup) {
        // B of group g: the weights p·s·2^E of this lane's rows for its column, hi or lo part.
        lastGroup = g;
        uint16_t h[4];
        KVC_UNROLL
        for (int i = 0; i < 4; ++i) {
          const float w = rows[i] < n ? p[i] * V::scale(vRow[i], D, g) * up : 0.0f;
          uint16_t hi, lo;
          splitHalf(w, &hi, &lo);
          h[i] = bPart ? lo : hi;
        }
        bW[0] = packHalves(h[0], h[1]);
        bW[1] = packHalves(h[2], h[3]);
        if (V::kOffset && lg < 4) {
          float o = 0.0f;
          KVC_UNROLL
          for (int i = 0; i < 4; ++i) o += rows[i] < n ? p[i] * V::offset(vRow[i], D, g) : 0.0f;
          KVC_UNROLL
          for (uint32_t gg = 0; gg < kMaxGroups; ++gg)
            if (gg == g) offAcc[gg] += o;
        }
      }
      uint32_t wv[4];
      KVC_UNROLL
      for (int i = 0; i < 4; ++i) wv[i] = rows[i] < n ? V::word(vRow[i], b, lg, G) : 0u;
      uint32_t af[4];
      V::pairs(wv[0], wv[1], lg, b, af[0], af[1]);
      V::pairs(wv[2], wv[3], lg, b, af[2], af[3]);
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      mmaF16(c, af, bW);
      KVC_UNROLL
      for (int i = 0; i < 4; ++i) acc[b][i] = fmaf(c[i], unscale, acc[b][i]);
    }
    __syncwarp();  // this stage is refilled two tiles on
    stage ^= 1u;
  }
  __syncthreads();  // every warp is done with its stages: the region becomes the merge scratch

  // ---- merge the warps: scratch[warp][j] = (m, l, acc[D]) ----
  float* scratch = reinterpret_cast<float*>(region);
  const size_t P = D + 2;
  float* mine = scratch + static_cast<size_t>(warp) * QR * P;
  KVC_UNROLL
  for (uint32_t b = 0; b < kBlocks; ++b) {
    KVC_UNROLL
    for (int i = 0; i < 4; ++i) acc[b][i] += __shfl_xor_sync(0xFFFFFFFFu, acc[b][i], 2);  // hi + lo columns
  }
  KVC_UNROLL
  for (uint32_t g = 0; g < kMaxGroups; ++g) {
    offAcc[g] += __shfl_xor_sync(0xFFFFFFFFu, offAcc[g], 1);
    offAcc[g] += __shfl_xor_sync(0xFFFFFFFFu, offAcc[g], 2);
  }
  if (lt < 2) {
    KVC_UNROLL
    for (uint32_t b = 0; b < kBlocks; ++b) {
      const uint32_t base = V::base(b, G);
      KVC_UNROLL
      for (int i = 0; i < 4; ++i) {
        const uint32_t j = 2 * lt + i % 2, d = base + 2 * lg + i / 2;
        mine[j * P + 2 + d] = acc[b][i];
      }
    }
  }
  if (lane % 8 == 0) {
    mine[(lane / 8) * P] = mRun;
    mine[(lane / 8) * P + 1] = lRun;
  }
  __syncwarp();
  if (V::kOffset && lg < 4 && lt == 0) {
    // Group by group with a compile-time index: a run-time offAcc[d / G] would put the array
    // in local memory (a stack frame) in every int4-value instance.
    KVC_UNROLL
    for (uint32_t gg = 0; gg < kMaxGroups; ++gg) {
      const float o = offAcc[gg];
      for (uint32_t d = gg * G; d < (gg + 1) * G && d < D; ++d) mine[lg * P + 2 + d] += o;
    }
  }
  __syncthreads();
  float* part = a.partials + (static_cast<size_t>(workIndex) * M + n0) * P;
  for (uint32_t i = tid; i < qRows * (D + 2); i += kThreads) {
    const uint32_t j = i / (D + 2), k = i % (D + 2);
    float mMax = kNegInf;
    for (uint32_t w = 0; w < kWarps; ++w) mMax = fmaxf(mMax, scratch[(w * QR + j) * P]);
    float out;
    if (k == 0) {
      out = mMax;
    } else {
      out = 0.0f;
      if (mMax != kNegInf) {
        for (uint32_t w = 0; w < kWarps; ++w) {
          const float m = scratch[(w * QR + j) * P];
          if (m != kNegInf) out += __expf(m - mMax) * scratch[(w * QR + j) * P + k];
        }
      }
    }
    part[j * P + k] = out;
  }
}
