"""The frozen denoiser's precision (issue 16): fp32 | bf16 | fp16 | auto in the Python API, the train config
(older configs load as 'amp', the behaviour they trained with), the denoiser report's columns, `info`."""
import pytest
import torch

import diffaug_fast
from diffaug_fast.augment import DiffAug, DiffAugEnsemble, PrecisionNet, amp_dtype, at_precision, denoiser_dtype
from diffaug_fast.config import to_dict, train_config, train_config_from_dict
from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.eval.denoiser_report import x0_mse_per_bucket
from diffaug_fast.ops import backends
from diffaug_fast.ops.backends import native_bf16, native_fp16, native_precision, resolve_precision


@pytest.fixture(scope="module")
def denoiser():
    return diffaug_fast.pretrained("fmnist")


def test_auto_is_bf16_exactly_where_the_hardware_computes_it():
    native, why = native_bf16("cpu")
    assert why and resolve_precision("auto", "cpu") == (torch.bfloat16 if native else None)
    assert (resolve_precision("fp32"), resolve_precision("bf16"), resolve_precision("fp16")) == \
        (None, torch.bfloat16, torch.float16)
    assert not native_bf16("cuda")[0] or torch.cuda.is_available()
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8")


def test_fp16_is_native_apart_from_bf16(monkeypatch):
    """An avx512_bf16 CPU without avx512_fp16 / AMX-FP16 (AMD Zen 4) computes bf16 natively but emulates fp16;
    the precision benchmark times such rows over one round and the report marks them emulated."""
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(backends, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert native_bf16("cpu")[0] and not native_fp16("cpu")[0] and "emulated" in native_fp16("cpu")[1]
    assert [native_precision(p, "cpu") for p in ("fp32", "bf16", "fp16")] == [True, True, False]
    monkeypatch.setattr(backends, "_cpu_flags", lambda: {"avx512_bf16", "avx512_fp16"})
    assert native_fp16("cpu") == (True, "the CPU has avx512_fp16")
    monkeypatch.setattr(backends, "_cpu_flags", lambda: set())
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert [native_precision(p, "cpu") for p in ("fp32", "bf16", "fp16")] == [True, False, False]
    with pytest.raises(ValueError, match="argument 'precision' is 'int8'"):
        native_precision("int8", "cpu")


def test_none_and_amp_keep_the_amp_behaviour(monkeypatch):
    for amp in ("auto", "off", "bf16", "fp16"):
        assert denoiser_dtype(None, amp, "cpu") == denoiser_dtype("amp", amp, "cpu") == \
            {"auto": None, "off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    monkeypatch.setattr(backends, "native_bf16", lambda device="cpu": (True, "pretend"))
    assert denoiser_dtype("auto", "off", "cpu") == torch.bfloat16
    monkeypatch.setattr(backends, "native_bf16", lambda device="cpu": (False, "pretend"))
    assert denoiser_dtype("auto", "bf16", "cpu") is None
    with pytest.raises(ValueError, match="precision"):
        denoiser_dtype("half", "auto", "cpu")


def test_diffaug_and_ensemble_set_the_denoisers_dtype(denoiser):
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16), (None, None)):
        assert DiffAug(denoiser, precision=precision).fast_net.dtype == dtype
        classifier = torch.nn.Linear(784, 10)
        assert DiffAugEnsemble(classifier, denoiser, [100], precision=precision).fast_net.dtype == dtype
    assert DiffAug(denoiser, amp="bf16").fast_net.dtype == torch.bfloat16  # None follows amp, as before
    with pytest.raises(ValueError, match="precision"):
        DiffAug(denoiser, precision="int8")


@pytest.mark.slow  # bf16 / fp16 are emulated (slowly) on CPUs without native support: about a minute there
def test_diffaug_and_ensemble_take_a_precision(denoiser):
    """Two images only: on a CPU without native bf16 / fp16 the reduced precisions are emulated, ~4x slower."""
    x0 = load_fashion_mnist("test", limit=2)[0]
    t = torch.tensor([100, 600])
    full = DiffAug(denoiser, seed=3, precision="fp32")(x0, t)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        aug = DiffAug(denoiser, seed=3, precision=precision)
        assert aug.fast_net.dtype == dtype
        low = aug(x0, t)
        assert low.dtype == torch.float32 and (low - full).abs().max() < 0.1
    assert DiffAug(denoiser).fast_net.dtype is None  # default: as amp='auto' (fp32 on CPU), as before
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    ensemble = DiffAugEnsemble(classifier, denoiser, [100], precision="bf16")
    assert ensemble.fast_net.dtype == torch.bfloat16 and ensemble.amp is None
    assert ensemble(x0).shape == (2, 10)


def test_at_precision_wraps_the_network_inside_the_block_only(denoiser):
    net = denoiser.net
    with at_precision(denoiser, "bf16"):
        assert isinstance(denoiser.net, PrecisionNet) and denoiser.net.net is net
    assert denoiser.net is net
    with at_precision(denoiser, "fp32"):
        assert denoiser.net is net


@pytest.mark.slow  # bf16 emulated on CPUs without avx512_bf16 / AMX: about a minute there
def test_report_columns_per_precision_share_t_and_noise(denoiser):
    images = load_fashion_mnist("test", limit=3)[0]
    fp32 = x0_mse_per_bucket(denoiser, images, buckets=2, batch=3)
    again = x0_mse_per_bucket(denoiser, images, buckets=2, batch=3, precision="fp32")
    bf16 = x0_mse_per_bucket(denoiser, images, buckets=2, batch=3, precision="bf16")
    assert fp32 == again
    for a, b in zip(fp32, bf16):
        assert a["t_from"] == b["t_from"] and abs(b["x0_mse"] / a["x0_mse"] - 1) < 0.1


def test_train_option_default_and_older_configs():
    assert train_config().diffaug.denoiser_precision == "auto"
    assert train_config(denoiser_precision="bf16").diffaug.denoiser_precision == "bf16"
    nested = to_dict(train_config())
    del nested["diffaug"]["denoiser_precision"]
    assert train_config_from_dict(nested).diffaug.denoiser_precision == "amp"
    assert train_config_from_dict({"lr": 0.1}).diffaug.denoiser_precision == "amp"  # flat, older layout
    assert train_config_from_dict({"denoiser_precision": "fp16"}).diffaug.denoiser_precision == "fp16"
    assert train_config_from_dict(to_dict(train_config())).diffaug.denoiser_precision == "auto"
    with pytest.raises(ValueError, match="denoiser.precision"):
        train_config(denoiser_precision="int8")


def test_an_older_run_resumes_with_the_default_where_auto_is_what_amp_gave(monkeypatch):
    from diffaug_fast.errors import DiffAugError
    from diffaug_fast.train.checks import check_same_run

    saved = to_dict(train_config())
    del saved["diffaug"]["denoiser_precision"]  # a config.json written before the option
    monkeypatch.setattr(backends, "native_bf16", lambda device="cpu": (False, "pretend"))
    check_same_run(saved, train_config(device="cpu"), "old run")  # auto = fp32 = amp auto on this CPU
    monkeypatch.setattr(backends, "native_bf16", lambda device="cpu": (True, "pretend"))
    with pytest.raises(DiffAugError, match="denoiser_precision: 'amp' -> 'auto'"):
        check_same_run(saved, train_config(device="cpu"), "old run")
    check_same_run(saved, train_config(device="cpu", denoiser_precision="amp"), "old run")


def test_info_says_what_auto_picks(capsys):
    from diffaug_fast.cli import main

    assert main(["info"]) in (0, None)
    out = capsys.readouterr().out
    choice = "bf16" if native_bf16("cpu")[0] else "fp32"
    assert "--denoiser-precision auto:" in out and f"cpu        {choice}: {native_bf16('cpu')[1]}" in out
    assert backends.build_info()["denoiser_precision_auto"]["cpu"]["choice"] == choice
    fp16 = "native" if native_fp16("cpu")[0] else "emulated"
    assert f"(an explicit fp16: {fp16})" in out
    assert backends.build_info()["denoiser_precision_auto"]["cpu"]["fp16"] == fp16


def test_fast_net_layouts_agree(denoiser):
    """channels_last is a layout, not a different computation: both layouts give the same output (eager fp32)."""
    from diffaug_fast.augment import FastNet

    x = torch.randn(3, 1, 28, 28)[..., ::1].transpose(2, 3)  # a non-contiguous input
    t = torch.tensor([5, 400, 999])
    nhwc = FastNet(denoiser, compile=False, device="cpu", precision="fp32")
    nchw = FastNet(denoiser, compile=False, device="cpu", precision="fp32", channels_last=False)
    with torch.inference_mode():
        torch.testing.assert_close(nhwc(x, t), nchw(x, t), rtol=1e-5, atol=1e-5)


def test_a_compiled_fast_net_defers_ctrl_c_on_every_call(denoiser):
    """Any call of a compiled network may compile (a new batch size): SIGINT and SIGTERM are blocked while it runs,
    so a terminal's Ctrl-C or a scheduler's SIGTERM cannot kill the C++ compiler mid-link; an eager one leaves the
    signal mask alone."""
    import signal

    from diffaug_fast.augment import FastNet

    seen = []

    def probe(x, cond):
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        seen.append(signal.SIGINT in blocked and signal.SIGTERM in blocked)
        return x

    for compiled in (True, False):
        net = FastNet(denoiser, compile=False, device="cpu", precision="fp32")
        net.net, net.compiled = probe, compiled  # the wrapper's behaviour, without paying for a compilation
        net(torch.zeros(1, 1, 28, 28), torch.tensor([3]))
    assert seen == [True, False]
    assert not {signal.SIGINT, signal.SIGTERM} & signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_a_chunked_fast_net_gives_the_same_output_with_one_batch_size(denoiser):
    """chunk=k: the network sees only k-image batches (the last piece padded), and the output is the unchunked one
    (the UNet treats images independently); odd sizes, learn-sigma-free, non-contiguous input."""
    from diffaug_fast.augment import FastNet

    x = torch.randn(11, 1, 28, 28).transpose(2, 3)
    t = torch.randint(0, 1000, (11,), generator=torch.Generator().manual_seed(0))
    whole = FastNet(denoiser, compile=False, device="cpu", precision="fp32")
    sizes = []
    pieces = whole.chunked(4)
    inner = pieces.net
    pieces.net = lambda xs, cond: (sizes.append(len(xs)), inner(xs, cond))[1]
    with torch.inference_mode():
        torch.testing.assert_close(pieces(x, t), whole(x, t), rtol=1e-5, atol=1e-5)
    assert sizes == [4, 4, 4] and whole.chunk is None
    with pytest.raises(ValueError, match="argument 'chunk'"):
        whole.chunked(0)


def _pretend_gpu(monkeypatch, capability: tuple[int, int]):
    """cuda:0 as a GPU of compute ``capability`` would report itself (no GPU is needed to decide a dtype)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"a sm_{capability[0]}{capability[1]} GPU")


@pytest.mark.parametrize("capability, expected", [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                                  ((7, 5), torch.float16), ((7, 0), torch.float16), ((6, 1), None)])
def test_amp_auto_is_what_the_gpu_computes_natively(monkeypatch, capability, expected):
    """bf16 where the tensor cores have it (sm_80 on), fp16 with loss scaling on sm_70 / sm_75 (bf16 would be
    emulated there), off on older GPUs and on any CPU."""
    _pretend_gpu(monkeypatch, capability)
    assert amp_dtype("auto", "cuda") == expected
    assert amp_dtype("auto", "cpu") is None
    assert amp_dtype("bf16", "cuda") == torch.bfloat16  # an explicit choice is kept (and warned about if emulated)
    assert (backends.emulated_warning("--amp", torch.bfloat16, "cuda") is None) == (expected == torch.bfloat16)


def _pretend_cpu(monkeypatch, flags: set[str]):
    """A CPU with ``flags`` as /proc/cpuinfo and torch.cpu's probes would report them."""
    monkeypatch.setattr(backends, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: "amx_bf16" in flags, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: "amx_fp16" in flags, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: "avx512_bf16" in flags, raising=False)


def test_an_emulated_precision_is_warned_about_with_what_to_use_instead(monkeypatch):
    """bf16 autocast on a CPU without avx512_bf16 / AMX runs the convolutions on torch's slow fallback (on the
    AVX2 EPYC 8x slower for the default classifier's step); asking for it gets one line naming the option."""
    _pretend_cpu(monkeypatch, {"avx2"})
    text = backends.emulated_warning("--amp", torch.bfloat16, "cpu")
    assert text.startswith("warning: --amp bf16 on cpu: ") and "emulated" in text and text.endswith("(try --amp off)")
    text = backends.emulated_warning("--denoiser-precision", torch.float16, "cpu")
    assert "--denoiser-precision fp16 on cpu" in text and text.endswith("(try --denoiser-precision fp32)")
    assert backends.emulated_warning("--amp", None, "cpu") is None
    assert backends.emulated_warning("--amp", torch.float32, "cpu") is None
    _pretend_cpu(monkeypatch, {"avx2", "avx512_bf16"})  # bf16 native, fp16 emulated (AMD Zen 4)
    assert backends.emulated_warning("--amp", torch.bfloat16, "cpu") is None
    assert "fp16" in backends.emulated_warning("--amp", torch.float16, "cpu")
    _pretend_cpu(monkeypatch, {"avx512_fp16"})  # fp16 native, bf16 not: --amp fp16 is the way out
    assert backends.emulated_warning("--amp", torch.bfloat16, "cpu").endswith("(try --amp fp16)")


def test_training_at_an_emulated_precision_says_so_once(monkeypatch, capsys):
    from helpers import fmnist_trainer

    _pretend_cpu(monkeypatch, {"avx2"})
    fmnist_trainer(amp="bf16", denoiser_precision="bf16")
    err = capsys.readouterr().err
    assert err.count("warning: --amp bf16 on cpu") == 1 and err.count("warning: --denoiser-precision bf16 on cpu") == 1
    fmnist_trainer(amp="off", denoiser_precision="fp32")
    assert "warning" not in capsys.readouterr().err
    _pretend_cpu(monkeypatch, {"avx512_bf16"})
    fmnist_trainer(amp="bf16", denoiser_precision="bf16")
    assert "warning" not in capsys.readouterr().err


def test_sampling_at_an_emulated_precision_says_so(monkeypatch, capsys, tmp_path):
    from diffaug_fast.cli import main

    _pretend_cpu(monkeypatch, {"avx2"})
    argv = ["sample", "--device", "cpu", "--num", "2", "--steps", "ddim2"]
    assert main(argv + ["--denoiser-precision", "bf16", "--out", str(tmp_path / "bf16")]) in (0, None)
    assert capsys.readouterr().err.count("warning: --denoiser-precision bf16 on cpu") == 1
    assert main(argv + ["--denoiser-precision", "auto", "--out", str(tmp_path / "auto")]) in (0, None)
    assert "warning" not in capsys.readouterr().err  # auto never picks an emulated dtype
