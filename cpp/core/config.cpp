// Checks a CacheConfig; every message names the field and the accepted values.
#include "config.h"

namespace kvc {

namespace {
bool isPowerOfTwo(uint32_t x) { return x != 0 && (x & (x - 1)) == 0; }
}  // namespace

Status validateConfig(const CacheConfig& c) {
  auto bad = [](const std::string& m) { return invalidArgument(m); };
  if (c.layers < 1 || c.layers > 4096) return bad("layers must be an integer in [1, 4096]");
  if (c.kvHeads < 1 || c.kvHeads > 1024) return bad("kvHeads must be an integer in [1, 1024]");
  if (c.headDim < 2 || c.headDim > 1024 || c.headDim % 2 != 0) return bad("headDim must be an even integer in [2, 1024]");
  if (c.queryHeads < c.kvHeads || c.queryHeads % c.kvHeads != 0) return bad("queryHeads must be a positive multiple of kvHeads");
  if (c.blockSize < 1 || c.blockSize > 4096) return bad("blockSize must be an integer in [1, 4096]");
  if (static_cast<int>(c.keys) >= kStorageCount || static_cast<int>(c.values) >= kStorageCount) return bad("unknown storage format");
  const bool quantized = isQuantized(c.keys) || isQuantized(c.values);
  if (quantized) {
    if (c.groupSize < 2 || c.headDim % c.groupSize != 0 || c.groupSize % 2 != 0) {
      return bad("groupSize must be an even divisor of headDim (" + std::to_string(c.headDim) + ")");
    }
  }
  if ((c.rotateKeys || c.rotateValues) && !isPowerOfTwo(c.headDim)) {
    return bad("rotate needs a power-of-two headDim (got " + std::to_string(c.headDim) + ")");
  }
  if (c.queryReservoir > (1u << 20)) return bad("queryReservoir must be in [0, 1048576]");
  if (c.recentQueries > (1u << 16)) return bad("recentQueries must be in [0, 65536]");
  if (c.threads > 256) return bad("threads must be in [0, 256]");
  if (c.device != "cpu" && c.device != "cuda") return bad("device must be 'cpu' or 'cuda'");
  const uint64_t blockBytes = c.blockLayout().blockBytes;
  if (c.maxBytes != 0 && c.maxBytes < blockBytes) {
    return bad("maxBytes (" + std::to_string(c.maxBytes) + ") is smaller than one block (" + std::to_string(blockBytes) + " bytes)");
  }
  return Status::ok();
}

}  // namespace kvc
