// One reverse-diffusion step for one element, shared by the CPU and CUDA kernels.
//
// Per-example coefficients c[0..7] (float32, built by diffaug_fast.diffusion.step_coefficients):
//   DDPM: a_t, s_t, posterior coef of x0, posterior coef of x_t, log var min, log var max, noise on (0/1), -
//   DDIM: a_t, s_t, a_prev, direction coef sqrt(1 - abar_prev - sigma^2), sigma, -, -, -
// with a = sqrt(abar), s = sqrt(1 - abar). eps is the network's eps prediction, v the
// learn_sigma interpolation output (ignored unless `learned`), g the classifier
// gradient grad log p(y|x_t) (0 without guidance), z standard normal noise.
//   DDPM (guided-diffusion's condition_mean): x0 = clip((x_t - s*eps)/a);
//     mu = c2*x0 + c3*x_t; log var = learned ? mix(c4, c5, (v+1)/2) : c4;
//     x_prev = mu + scale*var*g + c6*exp(log var / 2)*z
//   DDIM (condition_score): eps' = eps - s*scale*g; x0 = clip((x_t - s*eps')/a);
//     eps'' = (x_t - a*x0)/s; x_prev = a_prev*x0 + dir*eps'' + sigma*z
#pragma once
#include "diffaug_fast/epilogue.h"  // clamp_abs, DAF_HOST_DEVICE

namespace diffaug_fast {

enum StepMode : int64_t { kDDPM = 0, kDDIM = 1 };
constexpr int kStepCoefficients = 8;

// Noise scale of the step: examples with none (DDIM with eta = 0, DDPM's last step) skip making noise.
DAF_HOST_DEVICE float step_noise_scale(int64_t mode, const float* c) { return mode == kDDIM ? c[4] : c[6]; }

DAF_HOST_DEVICE float ddim_step(const float* c, float xt, float eps, float g, float z, float scale, float limit) {
  const float a = c[0], s = c[1];
  const float e = eps - s * scale * g;
  const float x0 = clamp_abs((xt - s * e) / a, limit);
  const float e2 = (xt - a * x0) / s;
  return c[2] * x0 + c[3] * e2 + c[4] * z;
}

// var = exp(log var), std = exp(log var / 2): per example for fixed variances, per element when learned.
DAF_HOST_DEVICE float ddpm_step(const float* c, float xt, float eps, float g, float z, float var, float std,
                                float scale, float limit) {
  const float x0 = clamp_abs((xt - c[1] * eps) / c[0], limit);
  return c[2] * x0 + c[3] * xt + scale * var * g + c[6] * std * z;
}

DAF_HOST_DEVICE float ddpm_log_var(const float* c, float v, bool learned) {
  const float frac = 0.5f * (v + 1.0f);
  return learned ? frac * c[5] + (1.0f - frac) * c[4] : c[4];
}

DAF_HOST_DEVICE float reverse_step(int64_t mode, const float* c, float xt, float eps, float v, float g, float z,
                                   float scale, float limit, bool learned) {
  if (mode == kDDIM) return ddim_step(c, xt, eps, g, z, scale, limit);
  const float log_var = ddpm_log_var(c, v, learned);
  return ddpm_step(c, xt, eps, g, z, expf(log_var), expf(0.5f * log_var), scale, limit);
}

}  // namespace diffaug_fast
