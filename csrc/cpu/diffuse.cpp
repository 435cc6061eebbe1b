// CPU kernel for diffaug_fast::diffuse.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "../dispatch.h"
#include "../layout.h"
#include "loops.h"
#include "noise.h"

namespace diffaug_fast::cpu {
namespace {

constexpr int64_t kChunk = 2048;  // elements per task; noise is staged in a float buffer of this size

std::tuple<at::Tensor, at::Tensor> diffuse_cpu(const at::Tensor& x0_in, const at::Tensor& a, const at::Tensor& s,
                                               const std::optional<at::Tensor>& noise_in, int64_t seed,
                                               int64_t offset, bool return_noise) {
  check_coefficients(x0_in, a, s);
  TORCH_CHECK(seed >= 0 && offset >= 0, "diffuse: seed and offset must be non-negative");
  const at::Tensor x0 = canonical_input(x0_in);
  const BatchLayout l = layout_of(x0);
  at::Tensor noise;
  if (noise_in.has_value()) {
    TORCH_CHECK(noise_in->sizes() == x0.sizes(), "diffuse: noise must have the shape of x0");
    noise = as_blocks(noise_in->to(x0.scalar_type()), l.channels_last);
  }
  const bool make_noise = !noise.defined();
  at::Tensor xt = empty_blocks_like(x0, l.channels_last);
  at::Tensor eps = (return_noise && make_noise) ? empty_blocks_like(x0, l.channels_last) : at::empty({0}, x0.options());
  if (x0.numel() == 0) return {xt, eps};

  const auto a_c = a.contiguous(), s_c = s.contiguous();
  const float* ap = a_c.data_ptr<float>();
  const float* sp = s_c.data_ptr<float>();
  const int64_t chunks = (l.inner + kChunk - 1) / kChunk;
  const int64_t noise_stride = noise.defined() ? (l.batch > 1 ? noise.stride(0) : l.inner) : 0;

  dispatch_storage_type(x0.scalar_type(), "x0", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x0.const_data_ptr<T>();
    T* op = xt.mutable_data_ptr<T>();
    T* ep = eps.numel() ? eps.mutable_data_ptr<T>() : nullptr;
    const T* np = noise.defined() ? noise.const_data_ptr<T>() : nullptr;
    at::parallel_for(0, l.batch * chunks, 1, [&](int64_t begin, int64_t end) {
      alignas(64) float buf[kChunk];
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks;
        const int64_t m0 = (task % chunks) * kChunk;
        const int64_t n = std::min(kChunk, l.inner - m0);
        const float ab = ap[b], sb = sp[b];
        const int64_t base = b * l.inner + m0;
        if (make_noise) {
          const uint64_t counter = static_cast<uint64_t>(offset) + static_cast<uint64_t>(b * l.inner);
          if (l.channels_last)
            fill_normal_channels_last(buf, n, seed, counter, m0, l.channels, l.pixels);
          else
            fill_normal(buf, n, seed, counter + m0);
        } else {
          load_float(buf, np + b * noise_stride + m0, n);
        }
        scale_add(op + base, xp + base, buf, ab, sb, n);
        if (ep) store_float(ep + base, buf, n);
      }
    });
  });
  return {xt, eps};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffaug_fast, CPU, m) { m.impl("diffuse", &diffuse_cpu); }

}  // namespace diffaug_fast::cpu
