// Host-side tensor plumbing shared by the CPU and CUDA launchers: argument
// checks, layouts and output allocation for each op, written once.
//
// Kernels see each tensor as B examples, each a contiguous block of `inner`
// elements in one of two memory orders (NCHW or channels-last), with its own
// batch stride. That covers contiguous tensors, channels-last tensors and
// channel slices such as the first half of a learn_sigma output, without copies;
// anything else is made contiguous first.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <limits>
#include <optional>

#include "diffaug_fast/epilogue.h"
#include "diffaug_fast/layout.h"

namespace diffaug_fast {

struct BatchLayout {
  bool channels_last = false;  // memory order inside an example
  int64_t batch = 0;
  int64_t inner = 0;     // elements per example
  int64_t channels = 1;  // only meaningful for channels_last
  int64_t pixels = 1;    // H*W, only meaningful for channels_last
};

inline bool is_channels_last_only(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline BatchLayout layout_of(const at::Tensor& t) {
  BatchLayout l;
  l.channels_last = is_channels_last_only(t);
  l.batch = t.size(0);
  l.inner = l.batch == 0 ? 0 : t.numel() / l.batch;
  if (t.dim() == 4) {
    l.channels = t.size(1);
    l.pixels = t.size(2) * t.size(3);
  }
  return l;
}

// True when every example of `t` is a contiguous block in the given order.
inline bool examples_are_blocks(const at::Tensor& t, bool channels_last) {
  if (t.numel() == 0) return false;  // copying nothing is free and keeps the checks simple
  if (!channels_last) return t.select(0, 0).is_contiguous();
  if (t.dim() != 4) return false;
  // channels-last block: strides (C, ..) become (1, W*C, C) inside the example
  const auto st = t.strides();
  const auto sz = t.sizes();
  return st[1] == 1 && st[3] == sz[1] && st[2] == sz[1] * sz[3];
}

// `t` with example blocks in the requested order, copying only when needed.
inline at::Tensor as_blocks(const at::Tensor& t, bool channels_last) {
  if (examples_are_blocks(t, channels_last)) return t;
  return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
}

inline at::Tensor canonical_input(const at::Tensor& t) {
  // The leading input (and so the output) is fully contiguous in its order.
  return is_channels_last_only(t) ? t : t.contiguous();
}

inline at::Tensor empty_blocks_like(const at::Tensor& t, bool channels_last) {
  return at::empty(t.sizes(), t.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                       : at::MemoryFormat::Contiguous));
}

inline void check_coefficients(const at::Tensor& ref, const at::Tensor& a, const at::Tensor& s) {
  TORCH_CHECK(ref.dim() >= 1, "diffaug_fast: input must have a batch dimension");
  for (const auto* c : {&a, &s}) {
    TORCH_CHECK(c->dim() == 1 && c->size(0) == ref.size(0), "diffaug_fast: coefficients must have shape [",
                ref.size(0), "], got ", c->sizes());
    TORCH_CHECK(c->scalar_type() == at::kFloat, "diffaug_fast: coefficients must be float32");
    TORCH_CHECK(c->device() == ref.device(), "diffaug_fast: coefficients must be on ", ref.device());
  }
}

inline int64_t batch_stride(const at::Tensor& t, const BatchLayout& l) {
  return (t.defined() && l.batch > 1) ? t.stride(0) : l.inner;
}

// Everything a diffuse kernel needs; outputs already allocated.
struct DiffusePlan {
  at::Tensor x0, noise, xt, eps;  // noise undefined: make it in-kernel; eps empty unless returned
  at::Tensor a, s;                // contiguous float32 [B]
  BatchLayout l;
  int64_t noise_stride = 0;
};

inline DiffusePlan plan_diffuse(const at::Tensor& x0_in, const at::Tensor& a, const at::Tensor& s,
                                const std::optional<at::Tensor>& noise_in, int64_t seed, int64_t offset,
                                bool return_noise) {
  check_coefficients(x0_in, a, s);
  TORCH_CHECK(seed >= 0 && offset >= 0, "diffuse: seed and offset must be non-negative");
  DiffusePlan p;
  p.x0 = canonical_input(x0_in);
  p.l = layout_of(p.x0);
  if (noise_in.has_value()) {
    TORCH_CHECK(noise_in->sizes() == p.x0.sizes(), "diffuse: noise must have the shape of x0");
    TORCH_CHECK(noise_in->device() == p.x0.device(), "diffuse: noise must be on ", p.x0.device());
    p.noise = as_blocks(noise_in->to(p.x0.scalar_type()), p.l.channels_last);
    p.noise_stride = batch_stride(p.noise, p.l);
  }
  p.xt = empty_blocks_like(p.x0, p.l.channels_last);
  p.eps = (return_noise && !p.noise.defined()) ? empty_blocks_like(p.x0, p.l.channels_last)
                                               : at::empty({0}, p.x0.options());
  p.a = a.contiguous();
  p.s = s.contiguous();
  return p;
}

// Everything a denoise_epilogue kernel needs; output already allocated.
struct EpiloguePlan {
  at::Tensor xt, out, x0;  // out may be a strided view (a learn_sigma half)
  at::Tensor a, s;
  BatchLayout l;
  int64_t out_stride = 0;
  float limit = 0;
};

inline EpiloguePlan plan_epilogue(const at::Tensor& xt_in, const at::Tensor& out_in, const at::Tensor& a,
                                  const at::Tensor& s, int64_t parametrization, std::optional<double> clip) {
  check_coefficients(xt_in, a, s);
  TORCH_CHECK(parametrization >= kEps && parametrization <= kScore, "denoise_epilogue: unknown parametrization ",
              parametrization);
  TORCH_CHECK(out_in.sizes() == xt_in.sizes(), "denoise_epilogue: model_out must have the shape of x_t");
  TORCH_CHECK(out_in.device() == xt_in.device(), "denoise_epilogue: model_out must be on ", xt_in.device());
  EpiloguePlan p;
  p.xt = canonical_input(xt_in);
  p.l = layout_of(p.xt);
  p.out = as_blocks(out_in, p.l.channels_last);
  p.out_stride = batch_stride(p.out, p.l);
  p.x0 = empty_blocks_like(p.xt, p.l.channels_last);
  p.a = a.contiguous();
  p.s = s.contiguous();
  p.limit = clip.has_value() ? static_cast<float>(*clip) : std::numeric_limits<float>::infinity();
  return p;
}

// Everything a guided_step kernel needs; output already allocated.
struct StepPlan {
  at::Tensor xt, eps, var_interp, grad, noise, out;  // optional inputs undefined when absent
  at::Tensor coef;                                   // contiguous float32 [B, kStepCoefficients]
  BatchLayout l;
  int64_t eps_stride = 0, var_stride = 0, grad_stride = 0, noise_stride = 0;
  float limit = 0;
};

inline StepPlan plan_step(const at::Tensor& xt_in, const at::Tensor& eps_in, const std::optional<at::Tensor>& var_in,
                          const std::optional<at::Tensor>& grad_in, const at::Tensor& coef,
                          const std::optional<at::Tensor>& noise_in, int64_t mode, std::optional<double> clip,
                          int64_t seed, int64_t offset) {
  TORCH_CHECK(xt_in.dim() >= 1, "guided_step: x_t must have a batch dimension");
  TORCH_CHECK(mode == kDDPM || mode == kDDIM || mode == kDDIMClipAfterShift, "guided_step: mode must be ",
              int64_t{kDDPM}, " (DDPM), ", int64_t{kDDIM}, " (DDIM) or ", int64_t{kDDIMClipAfterShift},
              " (DDIM, clip after the guidance shift)");
  TORCH_CHECK(seed >= 0 && offset >= 0, "guided_step: seed and offset must be non-negative");
  TORCH_CHECK(coef.dim() == 2 && coef.size(0) == xt_in.size(0) && coef.size(1) == kStepCoefficients &&
                  coef.scalar_type() == at::kFloat && coef.device() == xt_in.device(),
              "guided_step: coef must be float32 [B, ", kStepCoefficients, "] on the device of x_t");
  StepPlan p;
  p.xt = canonical_input(xt_in);
  p.l = layout_of(p.xt);
  auto attach = [&](const at::Tensor& t, const char* name, bool cast, int64_t& stride) {
    TORCH_CHECK(t.sizes() == p.xt.sizes(), "guided_step: ", name, " must have the shape of x_t");
    TORCH_CHECK(t.device() == p.xt.device(), "guided_step: ", name, " must be on ", p.xt.device());
    at::Tensor r = as_blocks(cast ? t.to(p.xt.scalar_type()) : t, p.l.channels_last);
    stride = batch_stride(r, p.l);
    return r;
  };
  p.eps = attach(eps_in, "eps", false, p.eps_stride);
  if (var_in.has_value()) {
    TORCH_CHECK(var_in->scalar_type() == eps_in.scalar_type(), "guided_step: var_interp must have eps's dtype");
    p.var_interp = attach(*var_in, "var_interp", false, p.var_stride);
  }
  if (grad_in.has_value()) p.grad = attach(*grad_in, "grad", true, p.grad_stride);
  if (noise_in.has_value()) p.noise = attach(*noise_in, "noise", true, p.noise_stride);
  p.coef = coef.contiguous();
  p.out = empty_blocks_like(p.xt, p.l.channels_last);
  p.limit = clip.has_value() ? static_cast<float>(*clip) : std::numeric_limits<float>::infinity();
  return p;
}

// Everything a dual_fusion kernel needs; output already allocated. Both inputs are seen as
// [B, C, P] (NCHW order; P = product of the trailing sizes) or, channels-last, [B, P, C].
struct FusionPlan {
  at::Tensor xt, x0, out;  // x0 cast to x_t's dtype and laid out like it
  at::Tensor wt, w0;       // contiguous float32 [B, C]
  BatchLayout l;
  int64_t channels = 0, pixels = 0;
  int64_t x0_stride = 0;
  bool concat = false;
};

inline FusionPlan plan_fusion(const at::Tensor& xt_in, const at::Tensor& x0_in, const at::Tensor& wt,
                              const at::Tensor& w0, bool concat) {
  TORCH_CHECK(xt_in.dim() >= 2, "dual_fusion: x_t must be [B, C, ...]");
  TORCH_CHECK(x0_in.sizes() == xt_in.sizes(), "dual_fusion: x0 must have the shape of x_t");
  TORCH_CHECK(x0_in.device() == xt_in.device(), "dual_fusion: x0 must be on ", xt_in.device());
  for (const auto* w : {&wt, &w0}) {
    TORCH_CHECK(w->dim() == 2 && w->size(0) == xt_in.size(0) && w->size(1) == xt_in.size(1),
                "dual_fusion: weights must have shape [B, C] = [", xt_in.size(0), ", ", xt_in.size(1), "]");
    TORCH_CHECK(w->scalar_type() == at::kFloat && w->device() == xt_in.device(),
                "dual_fusion: weights must be float32 on ", xt_in.device());
  }
  FusionPlan p;
  p.concat = concat;
  p.xt = canonical_input(xt_in);
  p.l = layout_of(p.xt);
  p.channels = p.xt.size(1);
  p.pixels = p.l.batch == 0 || p.channels == 0 ? 0 : p.l.inner / p.channels;
  p.x0 = as_blocks(x0_in.to(p.xt.scalar_type()), p.l.channels_last);
  p.x0_stride = batch_stride(p.x0, p.l);
  p.wt = wt.contiguous();
  p.w0 = w0.contiguous();
  auto sizes = p.xt.sizes().vec();
  if (concat) sizes[1] *= 2;
  p.out = at::empty(sizes, p.xt.options().memory_format(p.l.channels_last ? at::MemoryFormat::ChannelsLast
                                                                          : at::MemoryFormat::Contiguous));
  return p;
}

}  // namespace diffaug_fast
