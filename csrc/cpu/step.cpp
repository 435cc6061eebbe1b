// CPU kernel for diffaug_fast::guided_step.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "../dispatch.h"
#include "../plan.h"
#include "diffaug_fast/step.h"
#include "loops.h"
#include "noise.h"

namespace diffaug_fast::cpu {
namespace {

constexpr int64_t kChunk = 1024;

// kClipAfterShift: the older DDIM guidance variant (step.h); a template argument keeps the loop branch-free.
template <bool kClipAfterShift, typename T, typename TO>
DAF_CLONES void ddim_run(T* __restrict out, const T* __restrict xt, const TO* __restrict eps,
                         const float* __restrict g, const float* __restrict z, const float* c, float scale,
                         float limit, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float x = static_cast<float>(xt[j]), e = static_cast<float>(eps[j]);
    out[j] = static_cast<T>(kClipAfterShift ? ddim_step_clip_after_shift(c, x, e, g[j], z[j], scale, limit)
                                            : ddim_step(c, x, e, g[j], z[j], scale, limit));
  }
}

template <typename T, typename TO>
DAF_CLONES void ddpm_run(T* __restrict out, const T* __restrict xt, const TO* __restrict eps,
                         const float* __restrict g, const float* __restrict z, const float* __restrict var,
                         const float* __restrict std, const float* c, float scale, float limit, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    out[j] = static_cast<T>(
        ddpm_step(c, static_cast<float>(xt[j]), static_cast<float>(eps[j]), g[j], z[j], var[j], std[j], scale, limit));
}

at::Tensor guided_step_cpu(const at::Tensor& xt_in, const at::Tensor& eps_in, const std::optional<at::Tensor>& var_in,
                           const std::optional<at::Tensor>& grad_in, const at::Tensor& coef,
                           const std::optional<at::Tensor>& noise_in, int64_t mode, double scale,
                           std::optional<double> clip, int64_t seed, int64_t offset) {
  const StepPlan p = plan_step(xt_in, eps_in, var_in, grad_in, coef, noise_in, mode, clip, seed, offset);
  const BatchLayout& l = p.l;
  if (p.xt.numel() == 0) return p.out;
  const float* cp = p.coef.const_data_ptr<float>();
  const bool learned = p.var_interp.defined();
  const int64_t chunks = (l.inner + kChunk - 1) / kChunk;
  dispatch_storage_type(p.xt.scalar_type(), "x_t", [&](auto xtag) {
    dispatch_storage_type(p.eps.scalar_type(), "eps", [&](auto otag) {
      using T = typename decltype(xtag)::type;
      using TO = typename decltype(otag)::type;
      const T* xp = p.xt.const_data_ptr<T>();
      const TO* ep = p.eps.const_data_ptr<TO>();
      const TO* vp = learned ? p.var_interp.const_data_ptr<TO>() : nullptr;
      const T* gp = p.grad.defined() ? p.grad.const_data_ptr<T>() : nullptr;
      const T* np = p.noise.defined() ? p.noise.const_data_ptr<T>() : nullptr;
      T* op = p.out.mutable_data_ptr<T>();
      at::parallel_for(0, l.batch * chunks, 1, [&](int64_t begin, int64_t end) {
        alignas(64) float z[kChunk], g[kChunk], log_var[kChunk], var[kChunk], std_dev[kChunk];
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / chunks;
          const int64_t m0 = (task % chunks) * kChunk;
          const int64_t n = std::min(kChunk, l.inner - m0);
          const float* c = cp + b * kStepCoefficients;
          if (np) {
            load_float(z, np + b * p.noise_stride + m0, n);
          } else if (step_noise_scale(mode, c) == 0.0f) {
            std::fill(z, z + n, 0.0f);  // deterministic for this example: no noise to make
          } else {
            fill_normal_block(z, n, seed, offset, b, m0, l.inner, l.channels_last, l.channels, l.pixels);
          }
          if (gp) load_float(g, gp + b * p.grad_stride + m0, n); else std::fill(g, g + n, 0.0f);
          T* dst = op + b * l.inner + m0;
          const T* x = xp + b * l.inner + m0;
          const TO* e = ep + b * p.eps_stride + m0;
          if (mode == kDDIM) {
            ddim_run<false>(dst, x, e, g, z, c, static_cast<float>(scale), p.limit, n);
            continue;
          }
          if (mode == kDDIMClipAfterShift) {
            ddim_run<true>(dst, x, e, g, z, c, static_cast<float>(scale), p.limit, n);
            continue;
          }
          if (learned) {  // per-element log variance, exponentiated in one vectorized pass
            load_float(log_var, vp + b * p.var_stride + m0, n);
            for (int64_t j = 0; j < n; ++j) log_var[j] = ddpm_log_var(c, log_var[j], true);
            exp_var_std(log_var, var, std_dev, n);
          } else {
            const float log_var = ddpm_log_var(c, 0.0f, false);
            std::fill(var, var + n, expf(log_var));
            std::fill(std_dev, std_dev + n, expf(0.5f * log_var));
          }
          ddpm_run(dst, x, e, g, z, var, std_dev, c, static_cast<float>(scale), p.limit, n);
        }
      });
    });
  });
  return p.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(diffaug_fast, CPU, m) { m.impl("guided_step", &guided_step_cpu); }

}  // namespace diffaug_fast::cpu
