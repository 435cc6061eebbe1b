// In-kernel normal noise for the CPU backend.
//
// Two stages per block of up to kBlock elements, both in L1:
//  1. Philox4x32-10 words for each counter. GCC's auto-vectorized 32x32->64
//     multiplies are slow, so AVX-512 and AVX2 versions use vpmuludq on even
//     and odd lanes directly; a scalar loop covers other CPUs. Chosen at run time.
//  2. Words -> normals, auto-vectorized with glibc's SIMD logf/cosf (this file
//     is compiled with -ffast-math; every input is finite). target_clones builds
//     AVX-512, AVX2 and baseline versions of that loop.
// The result equals diffaug_fast::philox_normal up to a few ulps of logf/cosf.
#include "noise.h"

#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "diffaug_fast/philox.h"
#include "loops.h"  // DAF_CLONES

namespace diffaug_fast::cpu {
namespace {

constexpr int64_t kBlock = 1024;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DIFFAUG_FAST_NO_CLONES)
#define DAF_X86_DISPATCH 1
#endif

void philox_words_scalar(const uint32_t* lo, const uint32_t* hi, uint32_t* w0, uint32_t* w1, int64_t n,
                         uint32_t k0, uint32_t k1) {
  for (int64_t j = 0; j < n; ++j) {
    const Philox4 r = philox4x32_10(lo[j], hi[j], 0u, 0u, k0, k1);
    w0[j] = r.x0;
    w1[j] = r.x1;
  }
}

#ifdef DAF_X86_DISPATCH
// (hi, lo) words of x*m in each 32-bit lane: vpmuludq on the even lanes, then on the odd lanes.
__attribute__((target("avx512f"), always_inline)) inline void mul_wide(__m512i x, __m512i m, __m512i& hi,
                                                                        __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(x, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

__attribute__((target("avx2"), always_inline)) inline void mul_wide(__m256i x, __m256i m, __m256i& hi,
                                                                     __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}


__attribute__((target("avx512f"))) void philox_words_avx512(const uint32_t* lo_in, const uint32_t* hi_in,
                                                           uint32_t* w0, uint32_t* w1, int64_t n, uint32_t k0,
                                                           uint32_t k1) {
  const __m512i ma = _mm512_set1_epi32(static_cast<int>(kPhiloxRoundA));
  const __m512i mb = _mm512_set1_epi32(static_cast<int>(kPhiloxRoundB));
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512i c0 = _mm512_loadu_si512(lo_in + j), c1 = _mm512_loadu_si512(hi_in + j);
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    uint32_t key0 = k0, key1 = k1;
    for (int round = 0; round < 10; ++round) {
      __m512i hb, lb, ha, la;
      mul_wide(c2, mb, hb, lb);
      mul_wide(c0, ma, ha, la);
      c0 = _mm512_xor_si512(_mm512_xor_si512(hb, c1), _mm512_set1_epi32(static_cast<int>(key0)));
      c2 = _mm512_xor_si512(_mm512_xor_si512(ha, c3), _mm512_set1_epi32(static_cast<int>(key1)));
      c1 = lb;
      c3 = la;
      key0 += kPhiloxKeyA;
      key1 += kPhiloxKeyB;
    }
    _mm512_storeu_si512(w0 + j, c0);
    _mm512_storeu_si512(w1 + j, c1);
  }
  philox_words_scalar(lo_in + j, hi_in + j, w0 + j, w1 + j, n - j, k0, k1);
}

__attribute__((target("avx2"))) void philox_words_avx2(const uint32_t* lo_in, const uint32_t* hi_in, uint32_t* w0,
                                                      uint32_t* w1, int64_t n, uint32_t k0, uint32_t k1) {
  const __m256i ma = _mm256_set1_epi32(static_cast<int>(kPhiloxRoundA));
  const __m256i mb = _mm256_set1_epi32(static_cast<int>(kPhiloxRoundB));
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo_in + j));
    __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi_in + j));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t key0 = k0, key1 = k1;
    for (int round = 0; round < 10; ++round) {
      __m256i hb, lb, ha, la;
      mul_wide(c2, mb, hb, lb);
      mul_wide(c0, ma, ha, la);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hb, c1), _mm256_set1_epi32(static_cast<int>(key0)));
      c2 = _mm256_xor_si256(_mm256_xor_si256(ha, c3), _mm256_set1_epi32(static_cast<int>(key1)));
      c1 = lb;
      c3 = la;
      key0 += kPhiloxKeyA;
      key1 += kPhiloxKeyB;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + j), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + j), c1);
  }
  philox_words_scalar(lo_in + j, hi_in + j, w0 + j, w1 + j, n - j, k0, k1);
}
#endif

using WordsFn = void (*)(const uint32_t*, const uint32_t*, uint32_t*, uint32_t*, int64_t, uint32_t, uint32_t);

WordsFn pick_philox_words() {
#ifdef DAF_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return philox_words_avx512;
  if (__builtin_cpu_supports("avx2")) return philox_words_avx2;
#endif
  return philox_words_scalar;
}

const WordsFn philox_words = pick_philox_words();

DAF_CLONES void words_to_normal(float* __restrict out, const uint32_t* __restrict w0,
                                const uint32_t* __restrict w1, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float u1 = uint_to_uniform(w0[j]);
    const float u2 = uint_to_uniform(w1[j]);
    u1 = u1 > 1.0e-7f ? u1 : 1.0e-7f;
    out[j] = sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
  }
}

// Normals for the 64-bit counters produced by next_counter(j), j < n.
template <typename CounterFn>
void fill(float* out, int64_t n, uint64_t seed, CounterFn&& next_counter) {
  alignas(64) uint32_t lo[kBlock], hi[kBlock], w0[kBlock], w1[kBlock];
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = n - start < kBlock ? n - start : kBlock;
    for (int64_t j = 0; j < len; ++j) {
      const uint64_t c = next_counter(start + j);
      lo[j] = static_cast<uint32_t>(c);
      hi[j] = static_cast<uint32_t>(c >> 32);
    }
    philox_words(lo, hi, w0, w1, len, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    words_to_normal(out + start, w0, w1, len);
  }
}

}  // namespace

DAF_CLONES void exp_var_std(const float* __restrict log_var, float* __restrict var, float* __restrict std, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    var[j] = expf(log_var[j]);
    std[j] = expf(0.5f * log_var[j]);
  }
}

void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t counter0) {
  fill(out, n, seed, [counter0](int64_t j) { return counter0 + static_cast<uint64_t>(j); });
}

void fill_normal_channels_last(float* out, int64_t n, uint64_t seed, uint64_t example_counter0, int64_t m0,
                               int64_t channels, int64_t pixels) {
  // Walk (channel, pixel) incrementally: integer division does not vectorize anyway.
  int64_t c = m0 % channels, p = m0 / channels;
  fill(out, n, seed, [&](int64_t) {
    const uint64_t counter = example_counter0 + static_cast<uint64_t>(c * pixels + p);
    if (++c == channels) c = 0, ++p;
    return counter;
  });
}

}  // namespace diffaug_fast::cpu
