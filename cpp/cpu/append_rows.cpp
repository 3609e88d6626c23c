// append: converts (f16 -> f32), rotates and encodes each new row straight into its
// block slot, one row at a time while it is hot in L1 (the fused append of ARCHITECTURE §3).
#include "append_rows.h"

#include <cstring>

#include "hadamard.h"

namespace kvc::cpu {

Status appendRows(const AppendParams& p, const KernelTable& kt, std::vector<float>* scratch) {
  const RowCodec& c = p.codec;
  const uint32_t D = c.headDim, G = c.groupSize;
  const BlockLayout& L = p.pool.layout;
  scratch->resize(2ull * D);
  float* row = scratch->data();
  for (uint32_t s = 0; s < p.streamCount; ++s) {
    for (uint32_t t = 0; t < p.tokens; ++t) {
      const uint32_t r = static_cast<uint32_t>(p.startRow[s]) + t;
      uint8_t* block = p.pool.base + static_cast<uint64_t>(p.blockTables[s][r / L.blockSize]) * L.blockBytes;
      const uint32_t slot = r % L.blockSize;
      const uint64_t at = (static_cast<uint64_t>(t) * p.streamCount + s) * D;
      for (int tensor = 0; tensor < 2; ++tensor) {
        const void* src = tensor == 0 ? p.keys : p.values;
        const float* signs = tensor == 0 ? c.keySigns : c.valueSigns;
        const Storage storage = tensor == 0 ? c.keyStorage : c.valueStorage;
        const float* x;
        if (p.inputType == InputType::kF16) {
          kt.halfToFloat(static_cast<const uint16_t*>(src) + at, row, D);
          x = row;
        } else {
          x = static_cast<const float*>(src) + at;
        }
        if (signs) {
          if (x != row) std::memcpy(row, x, 4ull * D);
          rotateForward(row, signs, D);
          x = row;
        }
        uint8_t* dst = tensor == 0 ? block + static_cast<uint64_t>(slot) * L.keyRowBytes
                                   : block + L.valuesOffset + static_cast<uint64_t>(slot) * L.valueRowBytes;
        kt.encode[static_cast<int>(storage)](x, 1, D, G, dst, tensor == 0 ? L.keyRowBytes : L.valueRowBytes);
      }
      reinterpret_cast<float*>(block + L.betaOffset)[slot] = p.beta ? p.beta[static_cast<uint64_t>(t) * p.streamCount + s] : 0.0f;
      reinterpret_cast<int32_t*>(block + L.positionsOffset)[slot] = p.positions[t];
    }
  }
  return Status::ok();
}

}  // namespace kvc::cpu
