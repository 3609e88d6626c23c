// The CPU append path (see append_rows.cpp), and the kernel-table choice it shares with
// attention.
#pragma once
#include <vector>

#include "kernel_table.h"
#include "kvc/status.h"

namespace kvc::cpu {

// The widest kernel table this CPU supports whose vector width fits the codec.
const KernelTable& pickKernels(const RowCodec& codec);

// Writes the rows of `p` into their blocks. scratch: reusable per-caller buffer.
Status appendRows(const AppendParams& p, const KernelTable& kernels, std::vector<float>* scratch);

}  // namespace kvc::cpu
