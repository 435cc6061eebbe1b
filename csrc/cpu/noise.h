#pragma once
#include <cstdint>

namespace diffaug_fast::cpu {

// out[j] = philox_normal(seed, counter0 + j) for j < n.
void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t counter0);

// Same for a run of channels-last elements m0..m0+n of one example whose NCHW
// counters start at `example_counter0` (C channels, P pixels per channel).
void fill_normal_channels_last(float* out, int64_t n, uint64_t seed, uint64_t example_counter0, int64_t m0,
                               int64_t channels, int64_t pixels);

// The noise of elements m0..m0+n of example b in a batch laid out as the kernels see it.
inline void fill_normal_block(float* out, int64_t n, uint64_t seed, uint64_t offset, int64_t b, int64_t m0,
                              int64_t inner, bool channels_last, int64_t channels, int64_t pixels) {
  const uint64_t example_counter0 = offset + static_cast<uint64_t>(b * inner);
  if (channels_last)
    fill_normal_channels_last(out, n, seed, example_counter0, m0, channels, pixels);
  else
    fill_normal(out, n, seed, example_counter0 + static_cast<uint64_t>(m0));
}

// var[j] = exp(log_var[j]), std[j] = exp(log_var[j] / 2), vectorized (lives in the fast-math file).
void exp_var_std(const float* log_var, float* var, float* std, int64_t n);

}  // namespace diffaug_fast::cpu
