// CPU kernel for diffaug_fast::diffuse.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "../dispatch.h"
#include "../plan.h"
#include "loops.h"
#include "noise.h"

namespace diffaug_fast::cpu {
namespace {

constexpr int64_t kChunk = 2048;  // elements per task; noise is staged in a float buffer of this size

std::tuple<at::Tensor, at::Tensor> diffuse_cpu(const at::Tensor& x0_in, const at::Tensor& a, const at::Tensor& s,
                                               const std::optional<at::Tensor>& noise_in, int64_t seed,
                                               int64_t offset, bool return_noise) {
  const DiffusePlan p = plan_diffuse(x0_in, a, s, noise_in, seed, offset, return_noise);
  const BatchLayout& l = p.l;
  if (p.x0.numel() == 0) return {p.xt, p.eps};
  const float* ap = p.a.const_data_ptr<float>();
  const float* sp = p.s.const_data_ptr<float>();
  const bool make_noise = !p.noise.defined();
  const int64_t chunks = (l.inner + kChunk - 1) / kChunk;

  dispatch_storage_type(p.x0.scalar_type(), "x0", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = p.x0.const_data_ptr<T>();
    T* op = p.xt.mutable_data_ptr<T>();
    T* ep = p.eps.numel() ? p.eps.mutable_data_ptr<T>() : nullptr;
    const T* np = make_noise ? nullptr : p.noise.const_data_ptr<T>();
    at::parallel_for(0, l.batch * chunks, 1, [&](int64_t begin, int64_t end) {
      alignas(64) float buf[kChunk];
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks;
        const int64_t m0 = (task % chunks) * kChunk;
        const int64_t n = std::min(kChunk, l.inner - m0);
        const float ab = ap[b], sb = sp[b];
        const int64_t base = b * l.inner + m0;
        if (make_noise) {
          fill_normal_block(buf, n, seed, offset, b, m0, l.inner, l.channels_last, l.channels, l.pixels);
        } else {
          load_float(buf, np + b * p.noise_stride + m0, n);
        }
        scale_add(op + base, xp + base, buf, ab, sb, n);
        if (ep) store_float(ep + base, buf, n);
      }
    });
  });
  return {p.xt, p.eps};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffaug_fast, CPU, m) { m.impl("diffuse", &diffuse_cpu); }

}  // namespace diffaug_fast::cpu
