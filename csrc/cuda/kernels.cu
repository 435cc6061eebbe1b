// CUDA kernels for the diffaug_fast ops (diffuse, denoise_epilogue, guided_step, dual_fusion).
// Same math as the CPU kernels (csrc/include), one thread per element with a
// grid-stride loop; noise and epilogue coefficients are computed in registers.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>

#include "../dispatch.h"
#include "../plan.h"
#include "diffaug_fast/epilogue.h"
#include "diffaug_fast/philox.h"
#include "diffaug_fast/step.h"

namespace diffaug_fast::cuda {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(blocks, 65535 * 8));
}

template <typename T>
__global__ void diffuse_kernel(const T* __restrict__ x0, const T* __restrict__ noise, int64_t noise_stride,
                               T* __restrict__ xt, T* __restrict__ eps, const float* __restrict__ a,
                               const float* __restrict__ s, int64_t total, int64_t inner, bool channels_last,
                               int64_t channels, int64_t pixels, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / inner;
    const int64_t m = i - b * inner;
    float e;
    if (noise != nullptr) {
      e = static_cast<float>(noise[b * noise_stride + m]);
    } else {
      const int64_t logical = channels_last ? nchw_index_from_cl(m, channels, pixels) : m;
      e = philox_normal(seed, offset + static_cast<uint64_t>(b * inner + logical));
      if (eps != nullptr) eps[i] = static_cast<T>(e);
    }
    xt[i] = static_cast<T>(a[b] * static_cast<float>(x0[i]) + s[b] * e);
  }
}

template <typename TX, typename TO>
__global__ void epilogue_kernel(const TX* __restrict__ xt, const TO* __restrict__ out, int64_t out_stride,
                                TX* __restrict__ x0, const float* __restrict__ a, const float* __restrict__ s,
                                int64_t total, int64_t inner, int64_t parametrization, float limit) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / inner;
    const int64_t m = i - b * inner;
    const Affine f = x0_affine(parametrization, a[b], s[b]);
    x0[i] = static_cast<TX>(
        clamp_abs(f.alpha * static_cast<float>(xt[i]) + f.beta * static_cast<float>(out[b * out_stride + m]), limit));
  }
}

template <typename T, typename TO>
__global__ void step_kernel(const T* __restrict__ xt, const TO* __restrict__ eps, int64_t eps_stride,
                            const TO* __restrict__ var_interp, int64_t var_stride, const T* __restrict__ grad,
                            int64_t grad_stride, const T* __restrict__ noise, int64_t noise_stride,
                            T* __restrict__ out, const float* __restrict__ coef, int64_t total, int64_t inner,
                            bool channels_last, int64_t channels, int64_t pixels, int64_t mode, float scale,
                            float limit, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / inner;
    const int64_t m = i - b * inner;
    float z = 0.0f;
    if (noise != nullptr) {
      z = static_cast<float>(noise[b * noise_stride + m]);
    } else if (step_noise_scale(mode, coef + b * kStepCoefficients) != 0.0f) {
      const int64_t logical = channels_last ? nchw_index_from_cl(m, channels, pixels) : m;
      z = philox_normal(seed, offset + static_cast<uint64_t>(b * inner + logical));
    }
    const float v = var_interp != nullptr ? static_cast<float>(var_interp[b * var_stride + m]) : 0.0f;
    const float g = grad != nullptr ? static_cast<float>(grad[b * grad_stride + m]) : 0.0f;
    out[i] = static_cast<T>(reverse_step(mode, coef + b * kStepCoefficients, static_cast<float>(xt[i]),
                                         static_cast<float>(eps[b * eps_stride + m]), v, g, z, scale, limit,
                                         var_interp != nullptr));
  }
}

// One thread per output element (memory order). Output channels: 2C (concat) or C.
template <typename T>
__global__ void fusion_kernel(const T* __restrict__ xt, const T* __restrict__ x0, int64_t x0_stride,
                              const float* __restrict__ wt, const float* __restrict__ w0, T* __restrict__ out,
                              int64_t total, int64_t inner, int64_t channels, int64_t pixels, bool channels_last,
                              bool concat) {
  const int64_t out_channels = concat ? 2 * channels : channels;
  const int64_t out_inner = out_channels * pixels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / out_inner;
    const int64_t r = i - b * out_inner;
    const int64_t oc = channels_last ? r % out_channels : r / pixels;
    const int64_t q = channels_last ? r / out_channels : r % pixels;
    const int64_t c = oc % channels;
    const int64_t m = channels_last ? q * channels + c : c * pixels + q;
    const float u = wt[b * channels + c], v = w0[b * channels + c];
    float y;
    if (!concat) {
      y = u * static_cast<float>(xt[b * inner + m]) + v * static_cast<float>(x0[b * x0_stride + m]);
    } else if (oc < channels) {
      y = u * static_cast<float>(xt[b * inner + m]);
    } else {
      y = v * static_cast<float>(x0[b * x0_stride + m]);
    }
    out[i] = static_cast<T>(y);
  }
}

at::Tensor dual_fusion_cuda(const at::Tensor& xt_in, const at::Tensor& x0_in, const at::Tensor& wt,
                            const at::Tensor& w0, bool concat) {
  const c10::cuda::CUDAGuard guard(xt_in.device());
  const FusionPlan p = plan_fusion(xt_in, x0_in, wt, w0, concat);
  if (p.out.numel() == 0) return p.out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_storage_type(p.xt.scalar_type(), "x_t", [&](auto tag) {
    using T = typename decltype(tag)::type;
    fusion_kernel<T><<<blocks_for(p.out.numel()), kThreads, 0, stream>>>(
        p.xt.const_data_ptr<T>(), p.x0.const_data_ptr<T>(), p.x0_stride, p.wt.const_data_ptr<float>(),
        p.w0.const_data_ptr<float>(), p.out.mutable_data_ptr<T>(), p.out.numel(), p.l.inner, p.channels, p.pixels,
        p.l.channels_last, concat);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return p.out;
}

std::tuple<at::Tensor, at::Tensor> diffuse_cuda(const at::Tensor& x0_in, const at::Tensor& a, const at::Tensor& s,
                                                const std::optional<at::Tensor>& noise_in, int64_t seed,
                                                int64_t offset, bool return_noise) {
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const DiffusePlan p = plan_diffuse(x0_in, a, s, noise_in, seed, offset, return_noise);
  if (p.x0.numel() == 0) return {p.xt, p.eps};
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_storage_type(p.x0.scalar_type(), "x0", [&](auto tag) {
    using T = typename decltype(tag)::type;
    diffuse_kernel<T><<<blocks_for(p.x0.numel()), kThreads, 0, stream>>>(
        p.x0.const_data_ptr<T>(), p.noise.defined() ? p.noise.const_data_ptr<T>() : nullptr, p.noise_stride,
        p.xt.mutable_data_ptr<T>(), p.eps.numel() ? p.eps.mutable_data_ptr<T>() : nullptr,
        p.a.const_data_ptr<float>(), p.s.const_data_ptr<float>(), p.x0.numel(), p.l.inner, p.l.channels_last,
        p.l.channels, p.l.pixels, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.xt, p.eps};
}

at::Tensor denoise_epilogue_cuda(const at::Tensor& xt_in, const at::Tensor& out_in, const at::Tensor& a,
                                 const at::Tensor& s, int64_t parametrization, std::optional<double> clip) {
  const c10::cuda::CUDAGuard guard(xt_in.device());
  const EpiloguePlan p = plan_epilogue(xt_in, out_in, a, s, parametrization, clip);
  if (p.xt.numel() == 0) return p.x0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_storage_type(p.xt.scalar_type(), "x_t", [&](auto xtag) {
    dispatch_storage_type(p.out.scalar_type(), "model_out", [&](auto otag) {
      using TX = typename decltype(xtag)::type;
      using TO = typename decltype(otag)::type;
      epilogue_kernel<TX, TO><<<blocks_for(p.xt.numel()), kThreads, 0, stream>>>(
          p.xt.const_data_ptr<TX>(), p.out.const_data_ptr<TO>(), p.out_stride, p.x0.mutable_data_ptr<TX>(),
          p.a.const_data_ptr<float>(), p.s.const_data_ptr<float>(), p.xt.numel(), p.l.inner, parametrization,
          p.limit);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return p.x0;
}

at::Tensor guided_step_cuda(const at::Tensor& xt_in, const at::Tensor& eps_in, const std::optional<at::Tensor>& var_in,
                            const std::optional<at::Tensor>& grad_in, const at::Tensor& coef,
                            const std::optional<at::Tensor>& noise_in, int64_t mode, double scale,
                            std::optional<double> clip, int64_t seed, int64_t offset) {
  const c10::cuda::CUDAGuard guard(xt_in.device());
  const StepPlan p = plan_step(xt_in, eps_in, var_in, grad_in, coef, noise_in, mode, clip, seed, offset);
  if (p.xt.numel() == 0) return p.out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_storage_type(p.xt.scalar_type(), "x_t", [&](auto xtag) {
    dispatch_storage_type(p.eps.scalar_type(), "eps", [&](auto otag) {
      using T = typename decltype(xtag)::type;
      using TO = typename decltype(otag)::type;
      step_kernel<T, TO><<<blocks_for(p.xt.numel()), kThreads, 0, stream>>>(
          p.xt.const_data_ptr<T>(), p.eps.const_data_ptr<TO>(), p.eps_stride,
          p.var_interp.defined() ? p.var_interp.const_data_ptr<TO>() : nullptr, p.var_stride,
          p.grad.defined() ? p.grad.const_data_ptr<T>() : nullptr, p.grad_stride,
          p.noise.defined() ? p.noise.const_data_ptr<T>() : nullptr, p.noise_stride, p.out.mutable_data_ptr<T>(),
          p.coef.const_data_ptr<float>(), p.xt.numel(), p.l.inner, p.l.channels_last, p.l.channels, p.l.pixels, mode,
          static_cast<float>(scale), p.limit, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return p.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(diffaug_fast, CUDA, m) {
  m.impl("guided_step", &guided_step_cuda);
  m.impl("diffuse", &diffuse_cuda);
  m.impl("denoise_epilogue", &denoise_epilogue_cuda);
  m.impl("dual_fusion", &dual_fusion_cuda);
}

}  // namespace diffaug_fast::cuda
