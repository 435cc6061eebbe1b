// One reverse-diffusion step for one element, shared by the CPU and CUDA kernels.
//
// Per-example coefficients c[0 .. kStepCoefficients-1] (float32, built by
// diffaug_fast.diffusion.step_coefficients), named by the step_col:: columns of layout.h:
//   both: a = sqrt(abar), s = sqrt(1 - abar)
//   DDPM: mean_x0, mean_xt (posterior mean coefficients), log_var_min, log_var_max, noise (0/1)
//   DDIM: a_prev, dir = sqrt(1 - abar_prev - sigma^2), sigma
// eps is the network's eps prediction, v the learn_sigma interpolation output (ignored unless
// `learned`), g the classifier gradient grad log p(y|x_t) (0 without guidance), z standard normal noise.
//   DDPM (guided-diffusion's condition_mean): x0 = clip((x_t - s*eps)/a);
//     mu = mean_x0*x0 + mean_xt*x_t; log var = learned ? mix(log_var_min, log_var_max, (v+1)/2) : log_var_min;
//     x_prev = mu + scale*var*g + noise*exp(log var / 2)*z
//   DDIM (kDDIM, guided-diffusion's condition_score + ddim_sample): x0c = clip((x_t - s*eps)/a);
//     eps' = (x_t - a*x0c)/s - s*scale*g; x0' = (x_t - s*eps')/a, written x0c + s*(s*scale*g)/a (the same
//     value without the cancellation at small a; x0' is NOT clipped again); x_prev = a_prev*x0' + dir*eps' + sigma*z.
//     Unguided (g = 0 or scale = 0) this is exactly x0 = x0c, eps' = (x_t - a*x0c)/s.
//   DDIM clip after shift (kDDIMClipAfterShift, the older variant): eps' = eps - s*scale*g;
//     x0 = clip((x_t - s*eps')/a); eps'' = (x_t - a*x0)/s; x_prev = a_prev*x0 + dir*eps'' + sigma*z.
//     Unguided it equals kDDIM.
#pragma once
#include "diffaug_fast/epilogue.h"  // clamp_abs, DAF_HOST_DEVICE
#include "diffaug_fast/layout.h"    // StepMode, step_col::, kStepCoefficients

namespace diffaug_fast {

DAF_HOST_DEVICE bool is_ddim(int64_t mode) { return mode == kDDIM || mode == kDDIMClipAfterShift; }

// Noise scale of the step: examples with none (DDIM with eta = 0, DDPM's last step) skip making noise.
DAF_HOST_DEVICE float step_noise_scale(int64_t mode, const float* c) {
  return is_ddim(mode) ? c[step_col::kDdimSigma] : c[step_col::kDdpmNoise];
}

// guided-diffusion's order: clip x0 from the model's eps, then shift eps by the guidance.
DAF_HOST_DEVICE float ddim_step(const float* c, float xt, float eps, float g, float z, float scale, float limit) {
  const float a = c[step_col::kA], s = c[step_col::kS];
  const float x0c = clamp_abs((xt - s * eps) / a, limit);
  const float shift = s * scale * g;
  const float e = (xt - a * x0c) / s - shift;
  const float x0 = x0c + s * shift / a;
  return c[step_col::kDdimAPrev] * x0 + c[step_col::kDdimDir] * e + c[step_col::kDdimSigma] * z;
}

// The older variant: shift eps first, then clip the x0 made from it.
DAF_HOST_DEVICE float ddim_step_clip_after_shift(const float* c, float xt, float eps, float g, float z, float scale,
                                                 float limit) {
  const float a = c[step_col::kA], s = c[step_col::kS];
  const float e = eps - s * scale * g;
  const float x0 = clamp_abs((xt - s * e) / a, limit);
  const float e2 = (xt - a * x0) / s;
  return c[step_col::kDdimAPrev] * x0 + c[step_col::kDdimDir] * e2 + c[step_col::kDdimSigma] * z;
}

// var = exp(log var), std = exp(log var / 2): per example for fixed variances, per element when learned.
DAF_HOST_DEVICE float ddpm_step(const float* c, float xt, float eps, float g, float z, float var, float std,
                                float scale, float limit) {
  const float x0 = clamp_abs((xt - c[step_col::kS] * eps) / c[step_col::kA], limit);
  return c[step_col::kDdpmMeanX0] * x0 + c[step_col::kDdpmMeanXt] * xt + scale * var * g +
         c[step_col::kDdpmNoise] * std * z;
}

DAF_HOST_DEVICE float ddpm_log_var(const float* c, float v, bool learned) {
  const float frac = 0.5f * (v + 1.0f);
  return learned ? frac * c[step_col::kDdpmLogVarMax] + (1.0f - frac) * c[step_col::kDdpmLogVarMin]
                 : c[step_col::kDdpmLogVarMin];
}

DAF_HOST_DEVICE float reverse_step(int64_t mode, const float* c, float xt, float eps, float v, float g, float z,
                                   float scale, float limit, bool learned) {
  if (mode == kDDIM) return ddim_step(c, xt, eps, g, z, scale, limit);
  if (mode == kDDIMClipAfterShift) return ddim_step_clip_after_shift(c, xt, eps, g, z, scale, limit);
  const float log_var = ddpm_log_var(c, v, learned);
  return ddpm_step(c, xt, eps, g, z, expf(log_var), expf(0.5f * log_var), scale, limit);
}

}  // namespace diffaug_fast
