// Which vector instruction sets this CPU and OS support (cpuid + xgetbv), read once.
#pragma once

namespace kvc::cpu {

struct CpuFeatures {
  bool avx2 = false;     // with FMA and F16C, and the OS saving YMM state
  bool avx512 = false;   // F, BW, VL, DQ, and the OS saving ZMM state
  bool avx512vnni = false;  // with avx512: VNNI (vpdpbusd) and VBMI (byte permutes), precision 'fast'
};

const CpuFeatures& cpuFeatures();

}  // namespace kvc::cpu
