// CPU kernel for diffaug_fast::denoise_epilogue.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>

#include "../dispatch.h"
#include "../layout.h"
#include "diffaug_fast/epilogue.h"
#include "loops.h"

namespace diffaug_fast::cpu {
namespace {

constexpr int64_t kChunk = 4096;

at::Tensor denoise_epilogue_cpu(const at::Tensor& xt_in, const at::Tensor& out_in, const at::Tensor& a,
                                const at::Tensor& s, int64_t parametrization, std::optional<double> clip) {
  check_coefficients(xt_in, a, s);
  TORCH_CHECK(parametrization >= kEps && parametrization <= kScore, "denoise_epilogue: unknown parametrization ",
              parametrization);
  TORCH_CHECK(out_in.sizes() == xt_in.sizes(), "denoise_epilogue: model_out must have the shape of x_t");
  const at::Tensor xt = canonical_input(xt_in);
  const BatchLayout l = layout_of(xt);
  const at::Tensor out = as_blocks(out_in, l.channels_last);  // a learn_sigma half stays a view
  at::Tensor x0 = empty_blocks_like(xt, l.channels_last);
  if (xt.numel() == 0) return x0;

  const auto a_c = a.contiguous(), s_c = s.contiguous();
  const float* ap = a_c.data_ptr<float>();
  const float* sp = s_c.data_ptr<float>();
  const float limit = clip.has_value() ? static_cast<float>(*clip) : std::numeric_limits<float>::infinity();
  const int64_t out_stride = l.batch > 1 ? out.stride(0) : l.inner;
  const int64_t chunks = (l.inner + kChunk - 1) / kChunk;

  dispatch_storage_type(xt.scalar_type(), "x_t", [&](auto xtag) {
    dispatch_storage_type(out.scalar_type(), "model_out", [&](auto otag) {
      using TX = typename decltype(xtag)::type;
      using TO = typename decltype(otag)::type;
      const TX* xp = xt.const_data_ptr<TX>();
      const TO* mp = out.const_data_ptr<TO>();
      TX* rp = x0.mutable_data_ptr<TX>();
      at::parallel_for(0, l.batch * chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / chunks;
          const int64_t m0 = (task % chunks) * kChunk;
          const int64_t n = std::min(kChunk, l.inner - m0);
          const Affine f = x0_affine(parametrization, ap[b], sp[b]);
          affine_clamp(rp + b * l.inner + m0, xp + b * l.inner + m0, mp + b * out_stride + m0, f.alpha, f.beta,
                       limit, n);
        }
      });
    });
  });
  return x0;
}

}  // namespace

TORCH_LIBRARY_IMPL(diffaug_fast, CPU, m) { m.impl("denoise_epilogue", &denoise_epilogue_cpu); }

}  // namespace diffaug_fast::cpu
