// Plain scalar reference of the row formats and of attention, for the CUDA kernel tests.
// Row encoding mirrors the documented formulas in float (so stored bytes can be compared
// bit-exactly); attention is computed in double from the decoded rows.
#pragma once
#include <cstdint>
#include <vector>

#include "kvc/formats.h"

namespace kvcref {

using kvc::Storage;

// Rotation as documented in cuda/kernels/hadamard.cuh (butterflies h = 1, 2, 4, ..., then one
// multiply by 1 / sqrt(D)), in float.
void rotateForward(float* x, const float* signs, uint32_t D);
void rotateInverse(float* x, const float* signs, uint32_t D);
// x = diag(signs) H y / sqrt(D) with a dense Hadamard matrix, in double: independent of the
// butterfly order.
void denseRotateInverse(double* x, const float* signs, uint32_t D);

// Encodes the input row x (rotated first when signs != nullptr) into rowBytes bytes.
std::vector<uint8_t> encodeRow(const float* x, Storage s, uint32_t D, uint32_t groupSize, const float* signs);
// Decodes a stored row without undoing any rotation.
void decodeRowStored(const uint8_t* row, Storage s, uint32_t D, uint32_t groupSize, float* out);

struct RefRow {
  std::vector<double> key, value;  // dequantized and un-rotated (dense, double)
  double beta;
  int32_t position;
};

struct AttentionResult {
  std::vector<double> out;  // [D]
  double lse;
  std::vector<double> mass;  // [rows] softmax probability of each row
};

AttentionResult attention(const std::vector<RefRow>& rows, const float* q, uint32_t D, double scale, int32_t cutoff);

}  // namespace kvcref
