// Model output -> x0 estimate, shared by the CPU and CUDA kernels.
//
// With x_t = a*x0 + s*eps, every parametrization gives x0_hat as an affine map
// x0_hat = alpha*x_t + beta*out with per-example (alpha, beta):
//   eps   : out = eps_hat                    -> x0 = (x_t - s*out) / a
//   v     : out = a*eps - s*x0               -> x0 = (a*x_t - s*out) / (a^2 + s^2)
//   x0    : out = x0_hat                     -> x0 = out
//   score : out = grad log p(x_t) = -eps/s   -> x0 = (x_t + s^2*out) / a
// VE diffusion is the special case a = 1, s = sigma.
#pragma once
#include "diffaug_fast/layout.h"  // Parametrization
#include "diffaug_fast/philox.h"  // DAF_HOST_DEVICE

namespace diffaug_fast {

struct Affine {
  float alpha, beta;
};

DAF_HOST_DEVICE Affine x0_affine(int64_t param, float a, float s) {
  switch (param) {
    case kEps: return {1.0f / a, -s / a};
    case kV: {
      const float norm = 1.0f / (a * a + s * s);
      return {a * norm, -s * norm};
    }
    case kX0: return {0.0f, 1.0f};
    default: return {1.0f / a, s * s / a};  // kScore
  }
}

DAF_HOST_DEVICE float clamp_abs(float v, float limit) {
  return v > limit ? limit : (v < -limit ? -limit : v);
}

// Position of a channels-last element (within one example) in NCHW order, so
// that the noise attached to an element does not depend on memory format.
DAF_HOST_DEVICE int64_t nchw_index_from_cl(int64_t m, int64_t channels, int64_t pixels) {
  const int64_t c = m % channels;
  const int64_t p = m / channels;
  return c * pixels + p;
}

}  // namespace diffaug_fast
