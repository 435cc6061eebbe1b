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

// out = w*x (one weight for the run)
template <typename T>
DAF_CLONES void scale_copy(T* __restrict out, const T* __restrict x, float w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<T>(w * static_cast<float>(x[j]));
}

// out = u*x + v*z (one pair of weights for the run)
template <typename T>
DAF_CLONES void weighted_sum(T* __restrict out, const T* __restrict x, const T* __restrict z, float u, float v,
                             int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<T>(u * static_cast<float>(x[j]) + v * static_cast<float>(z[j]));
}

// out[j] = w[j]*x[j] (a weight per element of the run: channels-last channels)
template <typename T>
DAF_CLONES void scale_copy_vec(T* __restrict out, const T* __restrict x, const float* __restrict w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<T>(w[j] * static_cast<float>(x[j]));
}

// out[j] = u[j]*x[j] + v[j]*z[j]
template <typename T>
DAF_CLONES void weighted_sum_vec(T* __restrict out, const T* __restrict x, const T* __restrict z,
                                 const float* __restrict u, const float* __restrict v, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    out[j] = static_cast<T>(u[j] * static_cast<float>(x[j]) + v[j] * static_cast<float>(z[j]));
}

}  // namespace diffaug_fast::cpu
