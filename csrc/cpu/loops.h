// Elementwise inner loops of the CPU kernels over one contiguous run of n
// elements. Built for AVX-512, AVX2 and baseline x86-64 (target_clones) and
// chosen at load time, so one wheel is fast on every x86 CPU.
#pragma once
#include <cstdint>

#include "diffaug_fast/epilogue.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DIFFAUG_FAST_NO_CLONES)
#define DAF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DAF_CLONES
#endif

namespace diffaug_fast::cpu {

template <typename T>
DAF_CLONES void load_float(float* __restrict dst, const T* __restrict src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]);
}

template <typename T>
DAF_CLONES void store_float(T* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(src[j]);
}

// out = a*x + s*e
template <typename T>
DAF_CLONES void scale_add(T* __restrict out, const T* __restrict x, const float* __restrict e, float a, float s,
                          int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<T>(a * static_cast<float>(x[j]) + s * e[j]);
}

// out = clamp(alpha*x + beta*o, -limit, limit)
template <typename TX, typename TO>
DAF_CLONES void affine_clamp(TX* __restrict out, const TX* __restrict x, const TO* __restrict o, float alpha,
                             float beta, float limit, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    out[j] = static_cast<TX>(clamp_abs(alpha * static_cast<float>(x[j]) + beta * static_cast<float>(o[j]), limit));
}

}  // namespace diffaug_fast::cpu
