// Checks a CacheConfig against the limits of schema/options.json (the same tables the
// TypeScript layer checks with); every message names the field and the accepted values.
#include "config.h"

#include "kvc/generated/schema.h"
#include "tiers/tier_layout.h"

namespace kvc {

namespace {
bool isPowerOfTwo(uint32_t x) { return x != 0 && (x & (x - 1)) == 0; }

std::string range(uint64_t min, uint64_t max) { return "[" + std::to_string(min) + ", " + std::to_string(max) + "]"; }
}  // namespace

Status validateConfig(const CacheConfig& c) {
  namespace s = schema::cache;
  auto bad = [](const std::string& m) { return invalidArgument(m); };
  auto inRange = [](uint64_t v, uint64_t min, uint64_t max) { return v >= min && v <= max; };
  if (!inRange(c.layers, s::kLayersMin, s::kLayersMax)) return bad("layers must be an integer in " + range(s::kLayersMin, s::kLayersMax));
  if (!inRange(c.kvHeads, s::kKvHeadsMin, s::kKvHeadsMax)) return bad("kvHeads must be an integer in " + range(s::kKvHeadsMin, s::kKvHeadsMax));
  if (!inRange(c.headDim, s::kHeadDimMin, s::kHeadDimMax) || c.headDim % 2 != 0) {
    return bad("headDim must be an even integer in " + range(s::kHeadDimMin, s::kHeadDimMax));
  }
  if (!inRange(c.queryHeads, s::kQueryHeadsMin, s::kQueryHeadsMax) || c.queryHeads % c.kvHeads != 0) {
    return bad("queryHeads must be a multiple of kvHeads (" + std::to_string(c.kvHeads) + ") in " +
               range(s::kQueryHeadsMin, s::kQueryHeadsMax));
  }
  if (!inRange(c.blockSize, s::kBlockSizeMin, s::kBlockSizeMax)) return bad("blockSize must be an integer in " + range(s::kBlockSizeMin, s::kBlockSizeMax));
  if (static_cast<int>(c.keys) >= kStorageCount || static_cast<int>(c.values) >= kStorageCount) return bad("unknown storage format");
  // Checked for every format (not only quantized ones) so that the accepted configurations
  // are exactly the ones TypeScript accepts, and an export records a meaningful groupSize.
  if (!inRange(c.groupSize, s::kGroupSizeMin, s::kGroupSizeMax) || c.headDim % c.groupSize != 0 || c.groupSize % 2 != 0) {
    return bad("groupSize must be an even divisor of headDim (" + std::to_string(c.headDim) + ")");
  }
  if ((c.rotateKeys || c.rotateValues) && !isPowerOfTwo(c.headDim)) {
    return bad("rotate needs a power-of-two headDim (got " + std::to_string(c.headDim) + ")");
  }
  if (!inRange(c.queryReservoir, s::kQueryReservoirMin, s::kQueryReservoirMax)) {
    return bad("queryReservoir must be in " + range(s::kQueryReservoirMin, s::kQueryReservoirMax));
  }
  if (!inRange(c.recentQueries, s::kRecentQueriesMin, s::kRecentQueriesMax)) {
    return bad("recentQueries must be in " + range(s::kRecentQueriesMin, s::kRecentQueriesMax));
  }
  if (c.threads != 0 && !inRange(c.threads, s::kThreadsMin, s::kThreadsMax)) {
    return bad("threads must be 0 (hardware concurrency) or in " + range(s::kThreadsMin, s::kThreadsMax));
  }
  if (c.ropeDims != 0) {
    namespace r = schema::rope;
    if (c.ropeDims % 2 != 0 || c.ropeDims > c.headDim) {
      return bad("rope.dims must be an even integer in [2, headDim = " + std::to_string(c.headDim) + "]");
    }
    if (!(c.ropeTheta > r::kThetaMin && c.ropeTheta <= r::kThetaMax)) return bad("rope.theta must be a finite number > 0");
    if (c.ropeStyle >= static_cast<uint32_t>(schema::kRopeStyleCount)) return bad("rope.style must be 'interleaved' or 'half'");
    // Hadamard-rotated keys would have to be rotated back row by row before RoPE.
    if (c.rotateKeys) return bad("rope cannot be combined with rotated keys (rotate: true or rotate.keys)");
  }
  if (c.maxBytes > s::kMaxBytesMax) return bad("maxBytes must be at most " + std::to_string(s::kMaxBytesMax));
  if (schema::enumIndex(schema::kDeviceNames, schema::kDeviceCount, c.device.c_str()) < 0) return bad("device must be 'cpu' or 'cuda'");
  if (c.lowRankKeys != 0 || c.lowRankValues != 0) {
    namespace lr = schema::lowRank;
    if (c.lowRankKeys < lr::kKeysMin || c.lowRankKeys > c.headDim || c.lowRankKeys % 2 != 0) {
      return bad("lowRank.keys must be an even rank in [2, headDim (" + std::to_string(c.headDim) + ")]");
    }
    if (c.lowRankValues < lr::kValuesMin || c.lowRankValues > c.headDim || c.lowRankValues % 2 != 0) {
      return bad("lowRank.values must be an even rank in [2, headDim (" + std::to_string(c.headDim) + ")]");
    }
    if (c.lowRankKeys % c.groupSize != 0 || c.lowRankValues % c.groupSize != 0) {
      return bad("groupSize (" + std::to_string(c.groupSize) + ") must divide both lowRank ranks (" + std::to_string(c.lowRankKeys) +
                 ", " + std::to_string(c.lowRankValues) + ")");
    }
    if (c.rotateKeys || c.rotateValues) return bad("rotate cannot be combined with lowRank (coefficients are already decorrelated)");
    if (c.keySummaries) return bad("keySummaries cannot be combined with lowRank (summaries of coefficient rows are not implemented)");
    if (c.calibrationRows > lr::kCalibrationRowsMax) return bad("lowRank.calibrationRows must be in " + range(lr::kCalibrationRowsMin, lr::kCalibrationRowsMax));
  }
  if (c.tiered()) KVC_RETURN_IF_ERROR(validateTiers(c));
  const uint64_t blockBytes = blockFootprint(c.blockLayout());
  if (c.maxBytes != 0 && c.maxBytes < blockBytes) {
    return bad("maxBytes (" + std::to_string(c.maxBytes) + ") is smaller than one block (" + std::to_string(blockBytes) + " bytes)");
  }
  return Status::ok();
}

}  // namespace kvc
