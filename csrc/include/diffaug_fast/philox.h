// Counter-based normal noise shared by the CPU and CUDA kernels.
//
// Philox4x32-10 (Salmon et al., SC'11) keyed by a 64-bit seed, followed by the
// Box-Muller transform, arranged exactly like Triton's `tl.randn(seed, offset)`:
// the 64-bit counter `offset + element_index` is split into (lo, hi) words
// c0/c1, c2 = c3 = 0, the seed into key words (lo, hi); the first two output
// words become uniforms in [0, 1) and only the cosine branch is kept.
// Using the same arrangement makes all four backends produce the same noise.
#pragma once
#include <cstdint>
#include <math.h>  // logf/cosf/sqrtf: full-precision on host and device

#if defined(__CUDACC__)
#define DAF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DAF_HOST_DEVICE inline
#endif

namespace diffaug_fast {

constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;
constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;

DAF_HOST_DEVICE uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

struct Philox4 {
  uint32_t x0, x1, x2, x3;
};

// Ten rounds of Philox4x32 on counter (c0..c3) with key (k0, k1).
DAF_HOST_DEVICE Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                      uint32_t k0, uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint32_t p0 = c0, p2 = c2;
    c0 = mulhi32(kPhiloxRoundB, p2) ^ c1 ^ k0;
    c2 = mulhi32(kPhiloxRoundA, p0) ^ c3 ^ k1;
    c1 = kPhiloxRoundB * p2;
    c3 = kPhiloxRoundA * p0;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  return {c0, c1, c2, c3};
}

// Triton's uint_to_uniform_float for 32-bit words: the word read as int32,
// negatives folded with ~x, times the largest scale that keeps the result < 1.
DAF_HOST_DEVICE float uint_to_uniform(uint32_t word) {
  int32_t v = static_cast<int32_t>(word);
  v = v < 0 ? ~v : v;
  return static_cast<float>(v) * 4.6566127342e-10f;
}

// Standard normal for one element: counter = offset + index (64-bit).
DAF_HOST_DEVICE float philox_normal(uint64_t seed, uint64_t counter) {
  const Philox4 r = philox4x32_10(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                                  0u, 0u, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  float u1 = uint_to_uniform(r.x0);
  const float u2 = uint_to_uniform(r.x1);
  u1 = u1 > 1.0e-7f ? u1 : 1.0e-7f;
  const float radius = sqrtf(-2.0f * logf(u1));
  return radius * cosf(6.283185307179586f * u2);
}

}  // namespace diffaug_fast
