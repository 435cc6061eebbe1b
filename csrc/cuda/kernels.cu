// CUDA kernels for diffaug_fast::diffuse and diffaug_fast::denoise_epilogue.
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
#include "../layout.h"
#include "diffaug_fast/epilogue.h"
#include "diffaug_fast/philox.h"

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

std::tuple<at::Tensor, at::Tensor> diffuse_cuda(const at::Tensor& x0_in, const at::Tensor& a, const at::Tensor& s,
                                                const std::optional<at::Tensor>& noise_in, int64_t seed,
                                                int64_t offset, bool return_noise) {
  check_coefficients(x0_in, a, s);
  TORCH_CHECK(seed >= 0 && offset >= 0, "diffuse: seed and offset must be non-negative");
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const at::Tensor x0 = canonical_input(x0_in);
  const BatchLayout l = layout_of(x0);
  at::Tensor noise;
  if (noise_in.has_value()) {
    TORCH_CHECK(noise_in->sizes() == x0.sizes(), "diffuse: noise must have the shape of x0");
    noise = as_blocks(noise_in->to(x0.scalar_type()), l.channels_last);
  }
  at::Tensor xt = empty_blocks_like(x0, l.channels_last);
  at::Tensor eps =
      (return_noise && !noise.defined()) ? empty_blocks_like(x0, l.channels_last) : at::empty({0}, x0.options());
  if (x0.numel() == 0) return {xt, eps};
  const auto a_c = a.contiguous(), s_c = s.contiguous();
  const int64_t noise_stride = noise.defined() ? (l.batch > 1 ? noise.stride(0) : l.inner) : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_storage_type(x0.scalar_type(), "x0", [&](auto tag) {
    using T = typename decltype(tag)::type;
    diffuse_kernel<T><<<blocks_for(x0.numel()), kThreads, 0, stream>>>(
        x0.const_data_ptr<T>(), noise.defined() ? noise.const_data_ptr<T>() : nullptr, noise_stride,
        xt.mutable_data_ptr<T>(), eps.numel() ? eps.mutable_data_ptr<T>() : nullptr, a_c.const_data_ptr<float>(),
        s_c.const_data_ptr<float>(), x0.numel(), l.inner, l.channels_last, l.channels, l.pixels,
        static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {xt, eps};
}

at::Tensor denoise_epilogue_cuda(const at::Tensor& xt_in, const at::Tensor& out_in, const at::Tensor& a,
                                 const at::Tensor& s, int64_t parametrization, std::optional<double> clip) {
  check_coefficients(xt_in, a, s);
  TORCH_CHECK(parametrization >= kEps && parametrization <= kScore, "denoise_epilogue: unknown parametrization ",
              parametrization);
  TORCH_CHECK(out_in.sizes() == xt_in.sizes(), "denoise_epilogue: model_out must have the shape of x_t");
  TORCH_CHECK(out_in.device() == xt_in.device(), "denoise_epilogue: model_out must be on ", xt_in.device());
  const c10::cuda::CUDAGuard guard(xt_in.device());
  const at::Tensor xt = canonical_input(xt_in);
  const BatchLayout l = layout_of(xt);
  const at::Tensor out = as_blocks(out_in, l.channels_last);
  at::Tensor x0 = empty_blocks_like(xt, l.channels_last);
  if (xt.numel() == 0) return x0;
  const auto a_c = a.contiguous(), s_c = s.contiguous();
  const float limit = clip.has_value() ? static_cast<float>(*clip) : std::numeric_limits<float>::infinity();
  const int64_t out_stride = l.batch > 1 ? out.stride(0) : l.inner;
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_storage_type(xt.scalar_type(), "x_t", [&](auto xtag) {
    dispatch_storage_type(out.scalar_type(), "model_out", [&](auto otag) {
      using TX = typename decltype(xtag)::type;
      using TO = typename decltype(otag)::type;
      epilogue_kernel<TX, TO><<<blocks_for(xt.numel()), kThreads, 0, stream>>>(
          xt.const_data_ptr<TX>(), out.const_data_ptr<TO>(), out_stride, x0.mutable_data_ptr<TX>(),
          a_c.const_data_ptr<float>(), s_c.const_data_ptr<float>(), xt.numel(), l.inner, parametrization, limit);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return x0;
}

}  // namespace

TORCH_LIBRARY_IMPL(diffaug_fast, CUDA, m) {
  m.impl("diffuse", &diffuse_cuda);
  m.impl("denoise_epilogue", &denoise_epilogue_cuda);
}

}  // namespace diffaug_fast::cuda
