// CPU kernel for diffaug_fast::dual_fusion.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../dispatch.h"
#include "../plan.h"
#include "loops.h"

namespace diffaug_fast::cpu {
namespace {

at::Tensor dual_fusion_cpu(const at::Tensor& xt_in, const at::Tensor& x0_in, const at::Tensor& wt,
                           const at::Tensor& w0, bool concat) {
  const FusionPlan p = plan_fusion(xt_in, x0_in, wt, w0, concat);
  const int64_t B = p.l.batch, C = p.channels, P = p.pixels;
  if (p.out.numel() == 0) return p.out;
  const float* wtp = p.wt.const_data_ptr<float>();
  const float* w0p = p.w0.const_data_ptr<float>();
  const int64_t out_inner = p.out.numel() / B;

  dispatch_storage_type(p.xt.scalar_type(), "x_t", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = p.xt.const_data_ptr<T>();
    const T* zp = p.x0.const_data_ptr<T>();
    T* op = p.out.mutable_data_ptr<T>();
    if (!p.l.channels_last) {
      // NCHW: one task per (example, channel) plane of P contiguous elements
      at::parallel_for(0, B * C, std::max<int64_t>(1, 4096 / std::max<int64_t>(P, 1)), [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / C, c = task % C;
          const T* x = xp + b * p.l.inner + c * P;
          const T* z = zp + b * p.x0_stride + c * P;
          T* o = op + b * out_inner;
          if (concat) {
            scale_copy(o + c * P, x, wtp[task], P);
            scale_copy(o + (C + c) * P, z, w0p[task], P);
          } else {
            weighted_sum(o + c * P, x, z, wtp[task], w0p[task], P);
          }
        }
      });
    } else {
      // channels-last: one task per (example, pixel); channels are the contiguous run
      at::parallel_for(0, B * P, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / P, q = task % P;
          const T* x = xp + b * p.l.inner + q * C;
          const T* z = zp + b * p.x0_stride + q * C;
          if (concat) {
            T* o = op + b * out_inner + q * 2 * C;
            scale_copy_vec(o, x, wtp + b * C, C);
            scale_copy_vec(o + C, z, w0p + b * C, C);
          } else {
            weighted_sum_vec(op + b * out_inner + q * C, x, z, wtp + b * C, w0p + b * C, C);
          }
        }
      });
    }
  });
  return p.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(diffaug_fast, CPU, m) { m.impl("dual_fusion", &dual_fusion_cpu); }

}  // namespace diffaug_fast::cpu
