// The positional contracts between Python and the kernels, written once:
//   * the parametrization codes of denoise_epilogue,
//   * the step-mode codes of guided_step (and the DDIM guidance variants, which are step modes of their own),
//   * the columns of guided_step's per-example coefficient row, float32 [B, kStepCoefficients].
// ops.cpp exports every name below on diffaug_fast._C (PARAMETRIZATIONS, STEP_MODES, DDIM_GUIDANCE,
// STEP_COLUMNS, STEP_COEFFICIENTS); diffaug_fast/ops/layout.py reads them from there (and keeps a Python mirror,
// checked against the export by python_tests/ops/test_layout.py, for builds without the extension).
#pragma once
#include <cstdint>

namespace diffaug_fast {

// What the network predicts (denoise_epilogue's `parametrization`).
enum Parametrization : int64_t { kEps = 0, kV = 1, kX0 = 2, kScore = 3 };

// Which reverse step guided_step takes (its `mode`). kDDIM guides as guided-diffusion's condition_score +
// ddim_sample (clip x0, then shift eps; the shifted x0 is not clipped again); kDDIMClipAfterShift is the older
// variant that shifts eps first and clips the x0 made from it (formulas in step.h). Both read the DDIM columns.
enum StepMode : int64_t { kDDPM = 0, kDDIM = 1, kDDIMClipAfterShift = 2 };

// Columns of one example's coefficient row. Columns 0 and 1 are shared; the others mean different things
// per mode (see step.h for the formulas). Column 7 is unused (0).
namespace step_col {
constexpr int kA = 0;  // a_t = sqrt(abar_t)
constexpr int kS = 1;  // s_t = sqrt(1 - abar_t)
// DDPM (guided-diffusion's posterior):
constexpr int kDdpmMeanX0 = 2;     // posterior mean coefficient of x0
constexpr int kDdpmMeanXt = 3;     // posterior mean coefficient of x_t
constexpr int kDdpmLogVarMin = 4;  // log variance (the fixed one; the learned interpolation's lower end)
constexpr int kDdpmLogVarMax = 5;  // log variance at the learned interpolation's upper end (log beta_t)
constexpr int kDdpmNoise = 6;      // 1 if the step adds noise, 0 at the last step
// DDIM:
constexpr int kDdimAPrev = 2;  // sqrt(abar_prev)
constexpr int kDdimDir = 3;    // direction coefficient sqrt(1 - abar_prev - sigma^2)
constexpr int kDdimSigma = 4;  // noise scale sigma (0 for eta = 0)
}  // namespace step_col
constexpr int kStepCoefficients = 8;

// The Python names of the codes and columns, exported by ops.cpp (host only).
struct NamedValue {
  const char* name;
  int64_t value;
};
inline constexpr NamedValue kParametrizationNames[] = {{"eps", kEps}, {"v", kV}, {"x0", kX0}, {"score", kScore}};
// The modes step_coefficients builds rows for (guided_step's `mode`) ...
inline constexpr NamedValue kStepModeNames[] = {{"ddpm", kDDPM}, {"ddim", kDDIM}};
// ... and the op's code for each DDIM guidance variant (guided_step's / sample's `ddim_guidance`).
inline constexpr NamedValue kDdimGuidanceNames[] = {{"guided_diffusion", kDDIM},
                                                    {"clip_after_shift", kDDIMClipAfterShift}};
inline constexpr NamedValue kStepColumnNames[] = {
    {"a", step_col::kA},
    {"s", step_col::kS},
    {"ddpm_mean_x0", step_col::kDdpmMeanX0},
    {"ddpm_mean_xt", step_col::kDdpmMeanXt},
    {"ddpm_log_var_min", step_col::kDdpmLogVarMin},
    {"ddpm_log_var_max", step_col::kDdpmLogVarMax},
    {"ddpm_noise", step_col::kDdpmNoise},
    {"ddim_a_prev", step_col::kDdimAPrev},
    {"ddim_dir", step_col::kDdimDir},
    {"ddim_sigma", step_col::kDdimSigma},
};

}  // namespace diffaug_fast
