// Projection and lift of low-rank rows for one vector width S (included inside an ISA
// namespace by lowrank_<isa>.cpp). project is a small GEMM [n x D] . [D x r]: a register tile
// of R rows x NV vectors of coefficients, the basis row loaded once per d and shared by the
// R rows, each input element broadcast once; every coefficient is a sum over d in order, so
// all widths give the same result up to FMA contraction.

template <class S, int R, int NV>
inline void projectTile(const float* in, uint64_t inStride, uint32_t D, const float* basis, uint32_t r, uint32_t j0,
                        float scale, float* out, uint64_t outStride) {
  typename S::V acc[R][NV];
  for (int i = 0; i < R; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = S::zero();
  }
  for (uint32_t d = 0; d < D; ++d) {
    typename S::V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = S::load(basis + static_cast<uint64_t>(d) * r + j0 + v * S::W);
    for (int i = 0; i < R; ++i) {
      const typename S::V x = S::set1(in[i * inStride + d]);
      for (int v = 0; v < NV; ++v) acc[i][v] = S::fma(x, b[v], acc[i][v]);
    }
  }
  const typename S::V s = S::set1(scale);
  for (int i = 0; i < R; ++i) {
    for (int v = 0; v < NV; ++v) S::store(out + i * outStride + j0 + v * S::W, S::mul(acc[i][v], s));
  }
}

// Columns [j0, r) of R rows: whole vectors two at a time, then one, then scalar columns.
template <class S, int R>
inline void projectRows(const float* in, uint64_t inStride, uint32_t D, const float* basis, uint32_t r, float scale,
                        float* out, uint64_t outStride) {
  uint32_t j = 0;
  for (; j + 2 * S::W <= r; j += 2 * S::W) projectTile<S, R, 2>(in, inStride, D, basis, r, j, scale, out, outStride);
  for (; j + S::W <= r; j += S::W) projectTile<S, R, 1>(in, inStride, D, basis, r, j, scale, out, outStride);
  for (; j < r; ++j) {
    for (int i = 0; i < R; ++i) {
      float a = 0.0f;
      for (uint32_t d = 0; d < D; ++d) a += in[i * inStride + d] * basis[static_cast<uint64_t>(d) * r + j];
      out[i * outStride + j] = a * scale;
    }
  }
}

template <class S, int R>
void projectImpl(const float* in, uint64_t inStride, uint32_t n, uint32_t D, const float* basis, uint32_t r, float scale,
                 float* out, uint64_t outStride) {
  uint32_t i = 0;
  for (; i + R <= n; i += R) projectRows<S, R>(in + i * inStride, inStride, D, basis, r, scale, out + i * outStride, outStride);
  for (; i < n; ++i) projectRows<S, 1>(in + i * inStride, inStride, D, basis, r, scale, out + i * outStride, outStride);
}

// out[i][d] = sum_j coef[i][j] basis[d][j]: a dot product of r coefficients per output
// element (lifts are few rows: the attention outputs of one call, or rows read back).
template <class S>
void liftImpl(const float* coef, uint64_t coefStride, uint32_t n, uint32_t r, const float* basis, uint32_t D, float* out,
              uint64_t outStride) {
  for (uint32_t i = 0; i < n; ++i) {
    const float* c = coef + i * coefStride;
    for (uint32_t d = 0; d < D; ++d) {
      const float* b = basis + static_cast<uint64_t>(d) * r;
      typename S::V acc = S::zero();
      uint32_t j = 0;
      for (; j + S::W <= r; j += S::W) acc = S::fma(S::load(c + j), S::load(b + j), acc);
      float a = S::reduce(acc);
      for (; j < r; ++j) a += c[j] * b[j];
      out[i * outStride + d] = a;
    }
  }
}
