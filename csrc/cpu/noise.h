#pragma once
#include <cstdint>

namespace diffaug_fast::cpu {

// out[j] = philox_normal(seed, counter0 + j) for j < n.
void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t counter0);

// Same for a run of channels-last elements m0..m0+n of one example whose NCHW
// counters start at `example_counter0` (C channels, P pixels per channel).
void fill_normal_channels_last(float* out, int64_t n, uint64_t seed, uint64_t example_counter0, int64_t m0,
                               int64_t channels, int64_t pixels);

// var[j] = exp(log_var[j]), std[j] = exp(log_var[j] / 2), vectorized (lives in the fast-math file).
void exp_var_std(const float* log_var, float* var, float* std, int64_t n);

}  // namespace diffaug_fast::cpu
