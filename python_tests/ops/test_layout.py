"""The positional contracts (parametrization and step-mode codes, guided_step's coefficient columns) have one
definition, csrc/include/diffaug_fast/layout.h: the extension exports it, ops.layout reads it (or its mirror
without a build), and step_coefficients, the reference and the Triton kernels all go through ops.layout."""
import math

import pytest
import torch

from diffaug_fast.diffusion import linear_vp, step_coefficients
from diffaug_fast.ops import available_backends, denoise_epilogue, extension, guided_step, layout
from helpers import python_without_extension

needs_extension = pytest.mark.skipif(not extension.has_extension(), reason="diffaug_fast._C is not built")


BACKENDS = available_backends("cpu")  # reference, cpu, and triton under TRITON_INTERPRET=1
# Each mode's named columns (the shared a, s included).
MODE_COLUMNS = {mode: {name: col for name, col in layout.STEP_COLUMNS.items() if name in ("a", "s")
                       or name.startswith(mode + "_")} for mode in layout.STEP_MODES}


@needs_extension
def test_mirror_equals_what_the_extension_exports():
    exported = layout.exported()
    assert exported is not None, "diffaug_fast._C predates the layout export: rebuild it"
    assert layout.SOURCE == "extension"
    mirror = {k: (dict(v) if isinstance(v, type(layout.MIRROR)) else v) for k, v in layout.MIRROR.items()}
    assert exported == mirror


def test_named_constants_are_the_tables_entries():
    assert (layout.EPS, layout.V, layout.X0, layout.SCORE) == tuple(
        layout.PARAMETRIZATIONS[k] for k in ("eps", "v", "x0", "score"))
    assert (layout.DDPM, layout.DDIM) == (layout.STEP_MODES["ddpm"], layout.STEP_MODES["ddim"])
    # DDIM's guidance variants: the default is the 'ddim' code itself; each variant a code of its own
    assert layout.DDIM_GUIDANCE["guided_diffusion"] == layout.DDIM
    assert layout.DDIM_CLIP_AFTER_SHIFT == layout.DDIM_GUIDANCE["clip_after_shift"]
    assert layout.DDIM_CODES == set(layout.DDIM_GUIDANCE.values())
    assert len(set(layout.DDIM_GUIDANCE.values())) == len(layout.DDIM_GUIDANCE)
    assert not (set(layout.DDIM_GUIDANCE.values()) - {layout.DDIM}) & set(layout.STEP_MODES.values())
    for name, col in layout.STEP_COLUMNS.items():
        assert getattr(layout, f"COL_{name.upper()}") == col
    assert len(set(layout.PARAMETRIZATIONS.values())) == len(layout.PARAMETRIZATIONS)
    assert len(set(layout.STEP_MODES.values())) == len(layout.STEP_MODES)
    for mode, columns in MODE_COLUMNS.items():  # within one mode no two names share a column
        assert len(set(columns.values())) == len(columns), mode
        assert all(0 <= c < layout.STEP_COEFFICIENTS for c in columns.values())


def _row(mode: str, values: dict, batch: int = 2) -> torch.Tensor:
    coef = torch.zeros(batch, layout.STEP_COEFFICIENTS)
    for name, value in values.items():
        coef[:, layout.STEP_COLUMNS[name]] = value
    assert set(values) == set(MODE_COLUMNS[mode]), "every column of the mode is given"
    return coef


DDPM_ROW = dict(a=0.8, s=0.6, ddpm_mean_x0=0.3, ddpm_mean_xt=0.9, ddpm_log_var_min=-2.0, ddpm_log_var_max=-1.0,
                ddpm_noise=1.0)
DDIM_ROW = dict(a=0.8, s=0.6, ddim_a_prev=0.9, ddim_dir=0.35, ddim_sigma=0.25)


def _step_inputs():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 4, 4, generator=g) for _ in range(4)]  # x_t, eps, grad, noise


@pytest.mark.parametrize("backend", BACKENDS)
def test_named_columns_land_where_each_kernel_reads_them(backend):
    """A row built by column name gives the step.h formulas, written here by name, on every backend."""
    x, eps, grad, z = _step_inputs()
    var = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    scale = 1.3
    r = DDPM_ROW
    for learned in (False, True):
        coef = _row("ddpm", r)
        x0 = (x - r["s"] * eps) / r["a"]
        frac = (var + 1) / 2 if learned else 0.0
        log_var = frac * r["ddpm_log_var_max"] + (1 - frac) * r["ddpm_log_var_min"]
        expected = (r["ddpm_mean_x0"] * x0 + r["ddpm_mean_xt"] * x + scale * torch.exp(torch.as_tensor(log_var)) * grad
                    + r["ddpm_noise"] * torch.exp(0.5 * torch.as_tensor(log_var)) * z)
        model_out = torch.cat([eps, var], 1) if learned else eps
        got = guided_step(x, model_out, coef, mode="ddpm", grad=grad, scale=scale, noise=z, learn_sigma=learned,
                          backend=backend)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    r = DDIM_ROW
    coef = _row("ddim", r)
    # guided-diffusion's order (the default): clip x0, shift eps, x0 from the shifted eps without a second clip
    x0 = ((x - r["s"] * eps) / r["a"]).clamp(-1, 1)
    e = (x - r["a"] * x0) / r["s"] - r["s"] * scale * grad
    x0 = (x - r["s"] * e) / r["a"]
    expected = r["ddim_a_prev"] * x0 + r["ddim_dir"] * e + r["ddim_sigma"] * z
    got = guided_step(x, eps, coef, mode="ddim", grad=grad, scale=scale, clip=1.0, noise=z, backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # clip after shift
    e = eps - r["s"] * scale * grad
    x0 = ((x - r["s"] * e) / r["a"]).clamp(-1, 1)
    e2 = (x - r["a"] * x0) / r["s"]
    expected = r["ddim_a_prev"] * x0 + r["ddim_dir"] * e2 + r["ddim_sigma"] * z
    got = guided_step(x, eps, coef, mode="ddim", grad=grad, scale=scale, clip=1.0, noise=z, backend=backend,
                      ddim_guidance="clip_after_shift")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode, ddim_guidance", [(m, "guided_diffusion") for m in layout.STEP_MODES]
                         + [("ddim", g) for g in layout.DDIM_GUIDANCE if g != "guided_diffusion"])
def test_kernels_read_exactly_the_named_columns(backend, mode, ddim_guidance):
    """Changing a column changes the step if and only if the layout names it for that mode (every DDIM guidance
    variant reads the DDIM columns)."""
    x, eps, grad, z = _step_inputs()
    var = torch.zeros(2, 3, 4, 4) + 0.4
    learned = mode == "ddpm"
    model_out = torch.cat([eps, var], 1) if learned else eps
    base = _row(mode, DDPM_ROW if mode == "ddpm" else DDIM_ROW)

    def step(coef):
        return guided_step(x, model_out, coef, mode=mode, grad=grad, scale=0.7, noise=z, learn_sigma=learned,
                           ddim_guidance=ddim_guidance, backend=backend)

    before = step(base)
    used = set(MODE_COLUMNS[mode].values())
    for col in range(layout.STEP_COEFFICIENTS):
        coef = base.clone()
        coef[:, col] += 0.125
        changed = not torch.equal(step(coef), before)
        assert changed == (col in used), f"column {col} of a {mode} row"


@pytest.mark.parametrize("backend", BACKENDS)
def test_parametrization_codes_select_the_named_parametrization(backend):
    x, out = _step_inputs()[:2]
    a, s = torch.tensor([0.8, 0.6]), torch.tensor([0.6, 0.8])
    av, sv = a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)
    expected = {"eps": (x - sv * out) / av, "v": (av * x - sv * out) / (av**2 + sv**2), "x0": out,
                "score": (x + sv**2 * out) / av}
    assert set(expected) == set(layout.PARAMETRIZATIONS)
    for name, want in expected.items():
        got = denoise_epilogue(x, out, a, s, parametrization=name, backend=backend)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_step_coefficients_fill_the_named_columns():
    sched = linear_vp(100)
    i = torch.tensor([40, 1, 0])
    ab = sched.alphas_cumprod
    abar = ab[i]
    abar_prev = torch.where(i > 0, ab[(i - 1).clamp_min(0)], torch.ones_like(abar))
    beta = 1 - abar / abar_prev

    def f32(t):
        return t.to(torch.float32)

    ddpm = step_coefficients(sched, i, mode="ddpm")
    assert ddpm.shape == (3, layout.STEP_COEFFICIENTS)
    torch.testing.assert_close(ddpm[:, layout.COL_A], f32(abar.sqrt()))
    torch.testing.assert_close(ddpm[:, layout.COL_S], f32((1 - abar).sqrt()))
    torch.testing.assert_close(ddpm[:, layout.COL_DDPM_MEAN_X0], f32(beta * abar_prev.sqrt() / (1 - abar)))
    torch.testing.assert_close(ddpm[:, layout.COL_DDPM_MEAN_XT], f32((1 - abar_prev) * (1 - beta).sqrt() / (1 - abar)))
    torch.testing.assert_close(ddpm[:, layout.COL_DDPM_LOG_VAR_MAX], f32(beta.log()))
    assert ddpm[:, layout.COL_DDPM_NOISE].tolist() == [1.0, 1.0, 0.0]
    post_var_40 = beta[0] * (1 - abar_prev[0]) / (1 - abar[0])
    assert math.isclose(float(ddpm[0, layout.COL_DDPM_LOG_VAR_MIN]), float(post_var_40.log()), rel_tol=1e-5)
    unused = set(range(layout.STEP_COEFFICIENTS)) - set(MODE_COLUMNS["ddpm"].values())
    assert all(not ddpm[:, c].any() for c in unused)

    ddim = step_coefficients(sched, i, mode="ddim", eta=1.0)
    torch.testing.assert_close(ddim[:, layout.COL_A], f32(abar.sqrt()))
    torch.testing.assert_close(ddim[:, layout.COL_DDIM_A_PREV], f32(abar_prev.sqrt()))
    sigma = ((1 - abar_prev) / (1 - abar) * beta).clamp_min(0).sqrt()
    torch.testing.assert_close(ddim[:, layout.COL_DDIM_SIGMA], f32(sigma))
    torch.testing.assert_close(ddim[:, layout.COL_DDIM_DIR], f32((1 - abar_prev - sigma**2).clamp_min(0).sqrt()))
    unused = set(range(layout.STEP_COEFFICIENTS)) - set(MODE_COLUMNS["ddim"].values())
    assert all(not ddim[:, c].any() for c in unused)


@needs_extension
def test_compiled_op_checks_the_column_count():
    x = torch.zeros(2, 1, 2, 2)
    coef = torch.zeros(2, layout.STEP_COEFFICIENTS + 1)
    with pytest.raises(RuntimeError, match=rf"coef must be float32 \[B, {layout.STEP_COEFFICIENTS}\]"):
        torch.ops.diffaug_fast.guided_step(x, x, None, None, coef, None, layout.DDPM, 1.0, None, 0, 0)
    with pytest.raises(RuntimeError, match="mode must be"):
        torch.ops.diffaug_fast.guided_step(x, x, None, None, coef[:, :-1], None, 7, 1.0, None, 0, 0)


@pytest.mark.slow  # a Python subprocess (imports torch: ~4 s)
def test_without_the_extension_the_mirror_serves_the_reference():
    code = (
        "import torch\n"
        "from diffaug_fast.diffusion import linear_vp, step_coefficients\n"
        "from diffaug_fast.ops import guided_step, layout\n"
        "assert layout.SOURCE == 'mirror' and layout.exported() is None\n"
        "x = torch.randn(2, 1, 4, 4)\n"
        "for mode, how in (('ddpm', 'guided_diffusion'), ('ddim', 'guided_diffusion'), ('ddim', 'clip_after_shift')):\n"
        "    coef = step_coefficients(linear_vp(50), [10, 0], mode=mode)\n"
        "    assert guided_step(x, x, coef, mode=mode, grad=x, ddim_guidance=how, seed=0).isfinite().all()\n"
        "print('OK', layout.STEP_COEFFICIENTS)\n")
    out = python_without_extension(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"OK {layout.STEP_COEFFICIENTS}"
