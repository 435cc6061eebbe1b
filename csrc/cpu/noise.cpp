// In-kernel normal noise for the CPU backend.
//
// This file is compiled with -ffast-math (minus the finite-math assumption) so
// that GCC vectorizes the Philox rounds and calls glibc's SIMD logf/cosf
// (libmvec); target_clones builds AVX-512, AVX2 and baseline versions and picks
// one at load time. The results agree with the scalar formula to a few ulps.
#include "noise.h"

#include "diffaug_fast/epilogue.h"
#include "diffaug_fast/philox.h"

namespace diffaug_fast::cpu {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DIFFAUG_FAST_NO_CLONES)
#define DAF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DAF_CLONES
#endif

DAF_CLONES void fill_normal(float* __restrict out, int64_t n, uint64_t seed, uint64_t counter0) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = philox_normal(seed, counter0 + static_cast<uint64_t>(j));
}

DAF_CLONES void fill_normal_channels_last(float* __restrict out, int64_t n, uint64_t seed,
                                          uint64_t example_counter0, int64_t m0, int64_t channels,
                                          int64_t pixels) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const int64_t logical = nchw_index_from_cl(m0 + j, channels, pixels);
    out[j] = philox_normal(seed, example_counter0 + static_cast<uint64_t>(logical));
  }
}

}  // namespace diffaug_fast::cpu
