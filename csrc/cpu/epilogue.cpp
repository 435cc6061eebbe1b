// CPU kernel for diffaug_fast::denoise_epilogue.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>

#include "../dispatch.h"
#include "../plan.h"
#include "diffaug_fast/epilogue.h"
#include "loops.h"

namespace diffaug_fast::cpu {
namespace {

constexpr int64_t kChunk = 4096;

at::Tensor denoise_epilogue_cpu(const at::Tensor& xt_in, const at::Tensor& out_in, const at::Tensor& a,
                                const at::Tensor& s, int64_t parametrization, std::optional<double> clip) {
  const EpiloguePlan p = plan_epilogue(xt_in, out_in, a, s, parametrization, clip);
  const BatchLayout& l = p.l;
  if (p.xt.numel() == 0) return p.x0;
  const float* ap = p.a.const_data_ptr<float>();
  const float* sp = p.s.const_data_ptr<float>();
  const int64_t chunks = (l.inner + kChunk - 1) / kChunk;

  dispatch_storage_type(p.xt.scalar_type(), "x_t", [&](auto xtag) {
    dispatch_storage_type(p.out.scalar_type(), "model_out", [&](auto otag) {
      using TX = typename decltype(xtag)::type;
      using TO = typename decltype(otag)::type;
      const TX* xp = p.xt.const_data_ptr<TX>();
      const TO* mp = p.out.const_data_ptr<TO>();
      TX* rp = p.x0.mutable_data_ptr<TX>();
      at::parallel_for(0, l.batch * chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / chunks;
          const int64_t m0 = (task % chunks) * kChunk;
          const int64_t n = std::min(kChunk, l.inner - m0);
          const Affine f = x0_affine(parametrization, ap[b], sp[b]);
          affine_clamp(rp + b * l.inner + m0, xp + b * l.inner + m0, mp + b * p.out_stride + m0, f.alpha, f.beta,
                       p.limit, n);
        }
      });
    });
  });
  return p.x0;
}

}  // namespace

TORCH_LIBRARY_IMPL(diffaug_fast, CPU, m) { m.impl("denoise_epilogue", &denoise_epilogue_cpu); }

}  // namespace diffaug_fast::cpu
