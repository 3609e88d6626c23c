// The compaction kernels as templates over a SIMD struct (simd_scalar.h / simd_avx2.h /
// simd_avx512.h). Included once per instruction set inside that set's namespace and target
// region (kernels_<isa>.cpp), so every helper here is private to one instruction set.
// Expects <algorithm>, <cmath>, <cstring>, <limits>, kernels.h and simd_scalar.h included.

// ---- packing ---------------------------------------------------------------------------

template <class S, int NV>
void packRowsT(const float* b, uint32_t ldb, uint32_t K, uint32_t N, float* out) {
  constexpr uint32_t NR = NV * S::W;
  for (uint32_t p0 = 0; p0 < N; p0 += NR) {
    const uint32_t w = std::min(NR, N - p0);
    float* dst = out + static_cast<uint64_t>(p0 / NR) * K * NR;
    for (uint32_t k = 0; k < K; ++k) {
      std::memcpy(dst + static_cast<uint64_t>(k) * NR, b + static_cast<uint64_t>(k) * ldb + p0, w * sizeof(float));
      for (uint32_t c = w; c < NR; ++c) dst[static_cast<uint64_t>(k) * NR + c] = 0.0f;
    }
  }
}

template <class S, int NV>
void packTransposedT(const float* bt, uint32_t ldbt, uint32_t N, uint32_t K, float* out) {
  constexpr uint32_t NR = NV * S::W;
  for (uint32_t p0 = 0; p0 < N; p0 += NR) {
    const uint32_t w = std::min(NR, N - p0);
    float* dst = out + static_cast<uint64_t>(p0 / NR) * K * NR;
    // 64 values of K at a time, so that the strided writes of one panel stay in cache.
    for (uint32_t k0 = 0; k0 < K; k0 += 64) {
      const uint32_t k1 = std::min(K, k0 + 64);
      for (uint32_t c = 0; c < NR; ++c) {
        if (c < w) {
          const float* src = bt + static_cast<uint64_t>(p0 + c) * ldbt;
          for (uint32_t k = k0; k < k1; ++k) dst[static_cast<uint64_t>(k) * NR + c] = src[k];
        } else {
          for (uint32_t k = k0; k < k1; ++k) dst[static_cast<uint64_t>(k) * NR + c] = 0.0f;
        }
      }
    }
  }
}

// ---- GEMM --------------------------------------------------------------------------------

// An M × (NV·W) tile of c: M·NV accumulators stay in registers over the whole K loop; each k
// broadcasts one element of each of the M rows of a and loads one row of the B panel.
template <class S, int M, int NV>
inline void gemmTile(uint32_t K, const float* a, uint32_t lda, const float* b, uint64_t ldb, float* c, uint32_t ldc,
                     bool acc, uint32_t nValid) {
  using V = typename S::V;
  constexpr int W = S::W;
  constexpr uint32_t NR = NV * W;
  V r[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) r[i][v] = S::zero();
  for (uint32_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = S::load(b + k * ldb + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const V ai = S::set1(a[static_cast<uint64_t>(i) * lda + k]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) r[i][v] = S::fma(ai, bv[v], r[i][v]);
    }
  }
  if (nValid == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        float* p = c + static_cast<uint64_t>(i) * ldc + v * W;
        S::store(p, acc ? S::add(S::load(p), r[i][v]) : r[i][v]);
      }
  } else {
    float tmp[NR];
    for (int i = 0; i < M; ++i) {
      for (int v = 0; v < NV; ++v) S::store(tmp + v * W, r[i][v]);
      float* p = c + static_cast<uint64_t>(i) * ldc;
      for (uint32_t j = 0; j < nValid; ++j) p[j] = acc ? p[j] + tmp[j] : tmp[j];
    }
  }
}

template <class S, int NV, int M>
inline void gemmTileRows(int rows, uint32_t K, const float* a, uint32_t lda, const float* b, uint64_t ldb, float* c,
                         uint32_t ldc, bool acc, uint32_t nValid) {
  if (rows == M) return gemmTile<S, M, NV>(K, a, lda, b, ldb, c, ldc, acc, nValid);
  if constexpr (M > 1) gemmTileRows<S, NV, M - 1>(rows, K, a, lda, b, ldb, c, ldc, acc, nValid);
}

// One multiply-add of one lane, fused exactly when the vector multiply-add is (every vector
// instruction set here has FMA; the portable table multiplies and adds).
template <class S>
inline float fmaLane(float a, float b, float c) {
  if constexpr (S::W == 1) {
    return S::fma(a, b, c);
  } else {
    return std::fma(a, b, c);
  }
}

// gemm() with N = 1 (a matrix-vector product, e.g. the right-hand side of the beta fit): the
// tile would spend a whole panel of multiply-adds on one column. Each element gets the same
// operations in the same order as in the tile (per K slice: a chain from 0, then added to c),
// so the results are bit-identical; eight rows at a time keep eight chains in flight.
template <class S, uint32_t KC>
void gemmColumn(uint32_t M, uint32_t K, const float* a, uint32_t lda, const float* b, uint64_t rowStride, float* c,
                uint32_t ldc, bool accumulate) {
  constexpr uint32_t R = 8;
  for (uint32_t i0 = 0; i0 < M; i0 += R) {
    const uint32_t rows = std::min(R, M - i0);
    for (uint32_t k0 = 0; k0 < K; k0 += KC) {
      const uint32_t k1 = std::min(K, k0 + KC);
      float r[R] = {};
      const float* ar[R];
      for (uint32_t i = 0; i < R; ++i) ar[i] = a + static_cast<uint64_t>(i0 + std::min(i, rows - 1)) * lda;
      for (uint32_t k = k0; k < k1; ++k) {
        const float bk = b[k * rowStride];  // column 0 of the panel
#pragma GCC unroll 8
        for (uint32_t i = 0; i < R; ++i) r[i] = fmaLane<S>(ar[i][k], bk, r[i]);
      }
      for (uint32_t i = 0; i < rows; ++i) {
        float* p = c + static_cast<uint64_t>(i0 + i) * ldc;
        *p = accumulate || k0 > 0 ? *p + r[i] : r[i];
      }
    }
  }
}

// c = a · B where row k of panel p of B starts at b + p·panelStride + k·rowStride: a packed B
// (panelStride K·NR, rowStride NR) or a row-major one used in place (panelStride NR,
// rowStride ldb; N a multiple of NR). Same operations per element either way.
template <class S, int MR, int NV>
void gemmCore(uint32_t M, uint32_t N, uint32_t K, const float* a, uint32_t lda, const float* b, uint64_t panelStride,
              uint64_t rowStride, float* c, uint32_t ldc, bool accumulate) {
  constexpr uint32_t NR = NV * S::W;
  // K is cut into slices so that one slice of a B panel (KC × NR floats) stays in L1 while
  // all row tiles of a pass over it.
  constexpr uint32_t KC = 256;
  if (K == 0) {
    if (!accumulate)
      for (uint32_t i = 0; i < M; ++i) std::fill(c + static_cast<uint64_t>(i) * ldc, c + static_cast<uint64_t>(i) * ldc + N, 0.0f);
    return;
  }
  if (N == 1) return gemmColumn<S, KC>(M, K, a, lda, b, rowStride, c, ldc, accumulate);
  const uint32_t panels = (N + NR - 1) / NR;
  for (uint32_t k0 = 0; k0 < K; k0 += KC) {
    const uint32_t kc = std::min(KC, K - k0);
    const bool acc = accumulate || k0 > 0;
    for (uint32_t p = 0; p < panels; ++p) {
      const float* bp = b + p * panelStride + k0 * rowStride;
      const uint32_t nValid = std::min(NR, N - p * NR);
      for (uint32_t i0 = 0; i0 < M; i0 += MR) {
        const int rows = static_cast<int>(std::min<uint32_t>(MR, M - i0));
        gemmTileRows<S, NV, MR>(rows, kc, a + static_cast<uint64_t>(i0) * lda + k0, lda, bp, rowStride,
                                c + static_cast<uint64_t>(i0) * ldc + p * NR, ldc, acc, nValid);
      }
    }
  }
}

template <class S, int MR, int NV>
void gemmT(uint32_t M, uint32_t N, uint32_t K, const float* a, uint32_t lda, const float* packedB, float* c,
           uint32_t ldc, bool accumulate) {
  constexpr uint32_t NR = NV * S::W;
  gemmCore<S, MR, NV>(M, N, K, a, lda, packedB, static_cast<uint64_t>(K) * NR, NR, c, ldc, accumulate);
}

template <class S, int MR, int NV>
void gemmRowMajorT(uint32_t M, uint32_t N, uint32_t K, const float* a, uint32_t lda, const float* b, uint32_t ldb,
                   float* c, uint32_t ldc, bool accumulate) {
  constexpr uint32_t NR = NV * S::W;
  gemmCore<S, MR, NV>(M, N, K, a, lda, b, NR, ldb, c, ldc, accumulate);
}

// ---- softmax statistics ------------------------------------------------------------------

template <class S>
void softmaxRowsT(float* s, uint32_t ld, uint32_t rows, uint32_t cols, const float* bias, float* rowMax,
                  float* rowSum) {
  using V = typename S::V;
  constexpr uint32_t W = S::W;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (uint32_t r = 0; r < rows; ++r) {
    float* x = s + static_cast<uint64_t>(r) * ld;
    V vm = S::set1(ninf);
    uint32_t j = 0;
    for (; j + W <= cols; j += W) {
      V v = S::load(x + j);
      if (bias) v = S::add(v, S::load(bias + j));
      S::store(x + j, v);
      vm = S::max(vm, v);
    }
    float m = S::reduceMax(vm);
    for (; j < cols; ++j) {
      if (bias) x[j] += bias[j];
      m = x[j] > m ? x[j] : m;
    }
    if (!(m > ninf) || !(m < std::numeric_limits<float>::infinity())) {
      // All −inf (an empty softmax) or an infinite / NaN logit: no usable distribution.
      for (uint32_t k = 0; k < cols; ++k) x[k] = 0.0f;
      rowMax[r] = m;
      rowSum[r] = 0.0f;
      continue;
    }
    const V negM = S::set1(-m);
    V vs = S::zero();
    j = 0;
    for (; j + W <= cols; j += W) {
      const V e = S::exp(S::add(S::load(x + j), negM));
      S::store(x + j, e);
      vs = S::add(vs, e);
    }
    float sum = S::reduce(vs);
    for (; j < cols; ++j) {
      x[j] = SimdScalar::exp(x[j] - m);
      sum += x[j];
    }
    rowMax[r] = m;
    rowSum[r] = sum;
  }
}

template <class S>
void expAffineT(float* s, uint32_t ld, uint32_t rows, uint32_t cols, const float* rowOffset, const float* colOffset) {
  using V = typename S::V;
  constexpr uint32_t W = S::W;
  for (uint32_t r = 0; r < rows; ++r) {
    float* x = s + static_cast<uint64_t>(r) * ld;
    const float ro = rowOffset ? rowOffset[r] : 0.0f;
    const V rv = S::set1(ro);
    uint32_t j = 0;
    for (; j + W <= cols; j += W) {
      V v = S::add(S::load(x + j), rv);
      if (colOffset) v = S::add(v, S::load(colOffset + j));
      S::store(x + j, S::exp(v));
    }
    for (; j < cols; ++j) x[j] = SimdScalar::exp(x[j] + ro + (colOffset ? colOffset[j] : 0.0f));
  }
}

template <class S>
void accumulateColumnSquaresT(const float* s, uint32_t ld, uint32_t rows, uint32_t cols, const float* rowScale,
                              float* colAcc) {
  using V = typename S::V;
  constexpr uint32_t W = S::W;
  uint32_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* x0 = s + static_cast<uint64_t>(r) * ld;
    const float* x1 = x0 + ld;
    const float* x2 = x1 + ld;
    const float* x3 = x2 + ld;
    const V s0 = S::set1(rowScale[r]), s1 = S::set1(rowScale[r + 1]), s2 = S::set1(rowScale[r + 2]),
            s3 = S::set1(rowScale[r + 3]);
    uint32_t j = 0;
    for (; j + W <= cols; j += W) {
      const V a0 = S::mul(S::load(x0 + j), s0), a1 = S::mul(S::load(x1 + j), s1);
      const V a2 = S::mul(S::load(x2 + j), s2), a3 = S::mul(S::load(x3 + j), s3);
      V acc = S::load(colAcc + j);
      acc = S::fma(a0, a0, acc);
      acc = S::fma(a1, a1, acc);
      acc = S::fma(a2, a2, acc);
      acc = S::fma(a3, a3, acc);
      S::store(colAcc + j, acc);
    }
    for (; j < cols; ++j) {
      const float a0 = x0[j] * rowScale[r], a1 = x1[j] * rowScale[r + 1];
      const float a2 = x2[j] * rowScale[r + 2], a3 = x3[j] * rowScale[r + 3];
      colAcc[j] += a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3;
    }
  }
  for (; r < rows; ++r) {
    const float* x = s + static_cast<uint64_t>(r) * ld;
    for (uint32_t j = 0; j < cols; ++j) {
      const float a = x[j] * rowScale[r];
      colAcc[j] += a * a;
    }
  }
}

template <class S>
void gemvTransposedT(const float* a, uint32_t lda, uint32_t rows, uint32_t cols, const float* x, float* y) {
  using V = typename S::V;
  constexpr uint32_t W = S::W;
  std::fill(y, y + cols, 0.0f);
  uint32_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* a0 = a + static_cast<uint64_t>(r) * lda;
    const float* a1 = a0 + lda;
    const float* a2 = a1 + lda;
    const float* a3 = a2 + lda;
    const V x0 = S::set1(x[r]), x1 = S::set1(x[r + 1]), x2 = S::set1(x[r + 2]), x3 = S::set1(x[r + 3]);
    uint32_t j = 0;
    for (; j + W <= cols; j += W) {
      V acc = S::load(y + j);
      acc = S::fma(S::load(a0 + j), x0, acc);
      acc = S::fma(S::load(a1 + j), x1, acc);
      acc = S::fma(S::load(a2 + j), x2, acc);
      acc = S::fma(S::load(a3 + j), x3, acc);
      S::store(y + j, acc);
    }
    for (; j < cols; ++j) y[j] += a0[j] * x[r] + a1[j] * x[r + 1] + a2[j] * x[r + 2] + a3[j] * x[r + 3];
  }
  for (; r < rows; ++r) {
    const float* ar = a + static_cast<uint64_t>(r) * lda;
    for (uint32_t j = 0; j < cols; ++j) y[j] += ar[j] * x[r];
  }
}

// ---- f64 linear algebra -------------------------------------------------------------------
// Plain loops with eight independent partial sums, which the compiler turns into vector code
// of the region's instruction set without reassociating anything itself.

inline double dotF64(const double* a, const double* b, uint32_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[k + u] * b[k + u];
  double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

inline void axpyF64(double* y, double alpha, const double* x, uint32_t n) {
  for (uint32_t k = 0; k < n; ++k) y[k] += alpha * x[k];
}

// Row-oriented (Crout) factorization: L[i][j] = (A[i][j] − L[i][:j]·L[j][:j]) / L[j][j], in
// tiles of four rows i × four columns j: the dot products over the columns left of the tile
// run as 16 vector accumulators (each loaded row serves four products), and the few terms
// inside the tile's own columns are added afterwards in order.
inline bool choleskyF64(double* a, uint32_t n, uint32_t lda) {
  for (uint32_t i0 = 0; i0 < n; i0 += 4) {
    const uint32_t rows = std::min<uint32_t>(4, n - i0);
    double* li[4];
    for (uint32_t r = 0; r < 4; ++r) li[r] = a + static_cast<uint64_t>(i0 + std::min(r, rows - 1)) * lda;
    // Columns left of the block (i0 is a multiple of 4, so every tile has four columns).
    for (uint32_t j0 = 0; j0 < i0; j0 += 4) {
      const double* lj[4];
      for (uint32_t c = 0; c < 4; ++c) lj[c] = a + static_cast<uint64_t>(j0 + c) * lda;
      double acc[4][4][8] = {};
      uint32_t k = 0;
      for (; k + 8 <= j0; k += 8) {
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c)
#pragma GCC unroll 8
            for (int u = 0; u < 8; ++u) acc[r][c][u] += li[r][k + u] * lj[c][k + u];
      }
      for (uint32_t r = 0; r < rows; ++r) {
        for (uint32_t c = 0; c < 4; ++c) {
          const uint32_t j = j0 + c;
          const double* a8 = acc[r][c];
          double s = ((a8[0] + a8[4]) + (a8[1] + a8[5])) + ((a8[2] + a8[6]) + (a8[3] + a8[7]));
          for (uint32_t kk = k; kk < j; ++kk) s += li[r][kk] * lj[c][kk];
          li[r][j] = (li[r][j] - s) * (1.0 / lj[c][j]);
        }
      }
    }
    // The small triangle inside the block.
    for (uint32_t r = 0; r < rows; ++r) {
      const uint32_t i = i0 + r;
      double* row = a + static_cast<uint64_t>(i) * lda;
      for (uint32_t j = i0; j < i; ++j) {
        const double* lj = a + static_cast<uint64_t>(j) * lda;
        row[j] = (row[j] - dotF64(row, lj, j)) / lj[j];
      }
      const double d = row[i] - dotF64(row, row, i);
      if (!(d > 0.0) || !std::isfinite(d)) return false;
      row[i] = std::sqrt(d);
    }
  }
  return true;
}

// (L Lᵀ) x = b for a block of right-hand sides (NV vectors of VB bytes of columns of b, row
// stride ldb), four rows at a time held in registers: each loaded row of solved values serves
// four rows. Every element sees the same operations in the same order as the row-by-row
// loops of choleskySolveF64 (forward: k ascending, then the scale; backward: i descending,
// then the scale); only the loads and stores of b between the steps are gone.
template <int VB, int NV>
void choleskySolveColumnsF64(const double* l, uint32_t n, uint32_t lda, double* b, uint32_t ldb) {
  typedef double VD __attribute__((vector_size(VB)));
  constexpr uint32_t L = VB / 8;
  // By reference, not by value: no vector-typed arguments or returns across calls.
  auto load = [](VD& v, const double* p) { std::memcpy(&v, p, sizeof v); };
  auto store = [](double* p, const VD& v) { std::memcpy(p, &v, sizeof v); };
  for (uint32_t i0 = 0; i0 < n; i0 += 4) {
    const uint32_t rows = std::min<uint32_t>(4, n - i0);
    const double* li[4];
    VD acc[4][NV];
    for (uint32_t r = 0; r < 4; ++r) {
      li[r] = l + static_cast<uint64_t>(i0 + std::min(r, rows - 1)) * lda;
      for (int v = 0; v < NV; ++v) load(acc[r][v], b + static_cast<uint64_t>(i0 + std::min(r, rows - 1)) * ldb + v * L);
    }
    for (uint32_t k = 0; k < i0; ++k) {
      const double* yk = b + static_cast<uint64_t>(k) * ldb;
      VD y[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) load(y[v], yk + v * L);
#pragma GCC unroll 4
      for (uint32_t r = 0; r < 4; ++r) {
        const double alpha = -li[r][k];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] += alpha * y[v];
      }
    }
    for (uint32_t r = 0; r < rows; ++r) {
      for (uint32_t k = i0; k < i0 + r; ++k) {
        const double alpha = -li[r][k];
        for (int v = 0; v < NV; ++v) acc[r][v] += alpha * acc[k - i0][v];
      }
      const double inv = 1.0 / li[r][i0 + r];
      for (int v = 0; v < NV; ++v) {
        acc[r][v] *= inv;
        store(b + static_cast<uint64_t>(i0 + r) * ldb + v * L, acc[r][v]);
      }
    }
  }
  for (uint32_t k1 = n; k1 > 0;) {
    const uint32_t k0 = k1 >= 4 ? k1 - 4 : 0, rows = k1 - k0;
    VD acc[4][NV];
    for (uint32_t r = 0; r < 4; ++r)
      for (int v = 0; v < NV; ++v) load(acc[r][v], b + static_cast<uint64_t>(k0 + std::min(r, rows - 1)) * ldb + v * L);
    for (uint32_t i = n; i-- > k1;) {
      const double* xi = b + static_cast<uint64_t>(i) * ldb;
      const double* lrow = l + static_cast<uint64_t>(i) * lda + k0;
      VD x[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) load(x[v], xi + v * L);
#pragma GCC unroll 4
      for (uint32_t r = 0; r < 4; ++r) {
        const double alpha = -lrow[std::min(r, rows - 1)];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] += alpha * x[v];
      }
    }
    for (uint32_t k = k1; k-- > k0;) {
      const uint32_t r = k - k0;
      for (uint32_t i = k1; i-- > k + 1;) {
        const double alpha = -l[static_cast<uint64_t>(i) * lda + k];
        for (int v = 0; v < NV; ++v) acc[r][v] += alpha * acc[i - k0][v];
      }
      const double inv = 1.0 / l[static_cast<uint64_t>(k) * lda + k];
      for (int v = 0; v < NV; ++v) {
        acc[r][v] *= inv;
        store(b + static_cast<uint64_t>(k) * ldb + v * L, acc[r][v]);
      }
    }
    k1 = k0;
  }
}

// VB: the bytes of one vector register of the instruction set; NV: vectors per row of a block.
template <int VB, int NV>
void choleskySolveF64(const double* l, uint32_t n, uint32_t lda, double* b, uint32_t nrhs, uint32_t ldb) {
  if (nrhs == 1) {
    for (uint32_t i = 0; i < n; ++i) {
      const double* li = l + static_cast<uint64_t>(i) * lda;
      double s;
      if (ldb == 1) {
        s = dotF64(li, b, i);
      } else {
        s = 0.0;
        for (uint32_t k = 0; k < i; ++k) s += li[k] * b[static_cast<uint64_t>(k) * ldb];
      }
      b[static_cast<uint64_t>(i) * ldb] = (b[static_cast<uint64_t>(i) * ldb] - s) / li[i];
    }
    for (uint32_t i = n; i-- > 0;) {
      const double* li = l + static_cast<uint64_t>(i) * lda;
      const double xi = b[static_cast<uint64_t>(i) * ldb] / li[i];
      b[static_cast<uint64_t>(i) * ldb] = xi;
      for (uint32_t k = 0; k < i; ++k) b[static_cast<uint64_t>(k) * ldb] -= li[k] * xi;
    }
    return;
  }
  constexpr uint32_t kCols = NV * VB / 8;
  const uint32_t blocked = nrhs / kCols * kCols;
  for (uint32_t c0 = 0; c0 < blocked; c0 += kCols) choleskySolveColumnsF64<VB, NV>(l, n, lda, b + c0, ldb);
  if (blocked == nrhs) return;
  b += blocked;
  nrhs -= blocked;
  // Forward: y_i = (b_i − Σ_{k<i} L[i][k] y_k) / L[i][i], whole rows of right-hand sides at once.
  for (uint32_t i = 0; i < n; ++i) {
    const double* li = l + static_cast<uint64_t>(i) * lda;
    double* bi = b + static_cast<uint64_t>(i) * ldb;
    for (uint32_t k = 0; k < i; ++k) axpyF64(bi, -li[k], b + static_cast<uint64_t>(k) * ldb, nrhs);
    const double inv = 1.0 / li[i];
    for (uint32_t c = 0; c < nrhs; ++c) bi[c] *= inv;
  }
  // Backward: x_i = y_i / L[i][i], then removed from the rows above (Lᵀ read by rows of L).
  for (uint32_t i = n; i-- > 0;) {
    const double* li = l + static_cast<uint64_t>(i) * lda;
    double* bi = b + static_cast<uint64_t>(i) * ldb;
    const double inv = 1.0 / li[i];
    for (uint32_t c = 0; c < nrhs; ++c) bi[c] *= inv;
    for (uint32_t k = 0; k < i; ++k) axpyF64(b + static_cast<uint64_t>(k) * ldb, -li[k], bi, nrhs);
  }
}

inline uint32_t nnlsCoordinateDescentF64(const double* g, uint32_t n, uint32_t ldg, const double* h, double lo,
                                         double hi, uint32_t sweeps, double* w, double* gradBuf) {
  // gradBuf = G w − h, kept up to date as single coordinates move.
  for (uint32_t j = 0; j < n; ++j) w[j] = std::min(hi, std::max(lo, w[j]));
  for (uint32_t j = 0; j < n; ++j) gradBuf[j] = dotF64(g + static_cast<uint64_t>(j) * ldg, w, n) - h[j];
  uint32_t sweep = 0;
  for (; sweep < sweeps; ++sweep) {
    bool moved = false;
    for (uint32_t j = 0; j < n; ++j) {
      const double* gj = g + static_cast<uint64_t>(j) * ldg;
      const double diag = gj[j];
      if (!(diag > 0.0)) continue;
      const double next = std::min(hi, std::max(lo, w[j] - gradBuf[j] / diag));
      const double d = next - w[j];
      if (d == 0.0) continue;
      if (std::fabs(d) > 1e-7 * (1.0 + std::fabs(w[j]))) moved = true;
      w[j] = next;
      axpyF64(gradBuf, d, gj, n);  // G symmetric: column j is row j
    }
    if (!moved) {
      ++sweep;
      break;
    }
  }
  return sweep;
}

template <class S, int MR, int NV>
CompactionKernels makeCompactionTable() {
  CompactionKernels t;
  t.name = S::name();
  t.nr = NV * S::W;
  t.mr = MR;
  t.packRows = &packRowsT<S, NV>;
  t.packTransposed = &packTransposedT<S, NV>;
  t.gemm = &gemmT<S, MR, NV>;
  t.gemmRowMajor = &gemmRowMajorT<S, MR, NV>;
  t.softmaxRows = &softmaxRowsT<S>;
  t.expAffine = &expAffineT<S>;
  t.accumulateColumnSquares = &accumulateColumnSquaresT<S>;
  t.gemvTransposed = &gemvTransposedT<S>;
  t.cholesky = &choleskyF64;
  // Four rows × four vectors of right-hand sides: 16 accumulators (8 of the 16 AVX2 / SSE registers with 2).
  t.choleskySolve = S::W >= 16 ? &choleskySolveF64<64, 4> : S::W >= 8 ? &choleskySolveF64<32, 2> : &choleskySolveF64<16, 2>;
  t.nnlsCoordinateDescent = &nnlsCoordinateDescentF64;
  return t;
}
