// Op schemas and the Python module that reports how this extension was built and exports the
// codes and coefficient columns of diffaug_fast/layout.h.
// Kernels register themselves per device in csrc/cpu and csrc/cuda.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <pybind11/pybind11.h>

#include "build_config.h"
#include "diffaug_fast/layout.h"

TORCH_LIBRARY(diffaug_fast, m) {
  // x_t = a[b]*x0 + s[b]*eps. eps is `noise` when given, else Philox normal
  // noise keyed by (seed, offset + NCHW element index). Returns (x_t, eps) with
  // eps empty unless return_noise and the noise was made here.
  m.def("diffuse(Tensor x0, Tensor a, Tensor s, Tensor? noise, int seed, int offset, bool return_noise)"
        " -> (Tensor, Tensor)");
  // x0_hat = alpha*x_t + beta*model_out with (alpha, beta) from the
  // parametrization (a Parametrization code, diffaug_fast/layout.h) and (a, s); optional clamp to [-clip, clip].
  m.def("denoise_epilogue(Tensor x_t, Tensor model_out, Tensor a, Tensor s, int parametrization, float? clip)"
        " -> Tensor");
  // One DDPM or DDIM reverse step (a StepMode code; DDIM has two guidance variants) with optional classifier
  // guidance `grad` and its noise (in-kernel Philox unless `noise` is given); coef is float32
  // [B, kStepCoefficients] with the step_col:: columns of diffaug_fast/layout.h (formulas in step.h).
  m.def("guided_step(Tensor x_t, Tensor eps, Tensor? var_interp, Tensor? grad, Tensor coef, Tensor? noise,"
        " int mode, float scale, float? clip, int seed, int offset) -> Tensor");
  // Dual-input fusion of x_t [B, C, ...] and x0 (same shape) with per-(example, channel) weights w_t, w_0
  // (float32 [B, C]): concat -> [B, 2C, ...] = (w_t*x_t, w_0*x0) along channels; else w_t*x_t + w_0*x0.
  m.def("dual_fusion(Tensor x_t, Tensor x0, Tensor w_t, Tensor w_0, bool concat) -> Tensor");
}

namespace {

// {name: value} of one table of layout.h, in its order.
template <size_t N>
pybind11::dict named_values(const diffaug_fast::NamedValue (&table)[N]) {
  pybind11::dict d;
  for (const auto& v : table) d[v.name] = v.value;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "diffaug_fast compiled kernels (ops live under torch.ops.diffaug_fast)";
#ifdef DIFFAUG_FAST_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cuda_archs") = DIFFAUG_FAST_CUDA_ARCHS;
  m.attr("cxx_compiler") = DIFFAUG_FAST_CXX_COMPILER;
  m.attr("cuda_compiler") = DIFFAUG_FAST_CUDA_COMPILER;
  m.attr("parallel_info") = at::get_parallel_info();
  // The positional contracts of csrc/include/diffaug_fast/layout.h, read by diffaug_fast/ops/layout.py.
  m.attr("PARAMETRIZATIONS") = named_values(diffaug_fast::kParametrizationNames);
  m.attr("STEP_MODES") = named_values(diffaug_fast::kStepModeNames);
  m.attr("DDIM_GUIDANCE") = named_values(diffaug_fast::kDdimGuidanceNames);
  m.attr("STEP_COLUMNS") = named_values(diffaug_fast::kStepColumnNames);
  m.attr("STEP_COEFFICIENTS") = diffaug_fast::kStepCoefficients;
}
