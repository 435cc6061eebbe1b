"""The official DiffAug ImageNet optimiser recipe (plain-momentum SGD, lr x0.1 every N epochs), a torchvision model
trained end to end and reloaded, and the collective backend chosen from --device."""
import json

import pytest
import torch

from diffaug_fast.train.optim import lr_factor, make_optimizer


def test_step_every_n_steps_against_a_hand_computed_list():
    f = lr_factor("step", 0, 12, step_every=3)
    assert [f(s) for s in range(12)] == pytest.approx([1, 1, 1, .1, .1, .1, .01, .01, .01, .001, .001, .001])
    g = lr_factor("step", 2, 8, step_every=4)  # warm-up multiplies the first steps
    assert [g(s) for s in range(8)] == pytest.approx([.5, 1, 1, 1, .1, .1, .1, .1])
    h = lr_factor("step", 0, 8)  # unchanged default: x0.1 at 50% and 75%
    assert [h(s) for s in range(8)] == pytest.approx([1, 1, 1, 1, .1, .1, .01, .01])


def test_nesterov_flag_reaches_sgd():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert make_optimizer(params, "sgd", 0.1, 1e-4).param_groups[0]["nesterov"] is True
    group = make_optimizer(params, "sgd", 0.1, 1e-4, nesterov=False).param_groups[0]
    assert group["nesterov"] is False and group["momentum"] == 0.9 and group["weight_decay"] == 1e-4


def test_lr_step_epochs_needs_the_step_schedule():
    from diffaug_fast.config import train_config

    with pytest.raises(ValueError, match="--lr-step-epochs needs --lr-schedule step"):
        train_config("quick", lr_step_epochs=30)
    with pytest.raises(ValueError, match="argument --lr-step-epochs must be > 0 or 'off'"):
        train_config("quick", lr_schedule="step", lr_step_epochs=0)


def test_backend_follows_the_run_device(monkeypatch):
    from diffaug_fast.train import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.backend_for_device("auto") == "nccl" and distributed.backend_for_device("cuda:1") == "nccl"
    assert distributed.backend_for_device("cpu") == "gloo"  # --device cpu on a GPU machine: gloo, not NCCL
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.backend_for_device("auto") == "gloo"
    assert distributed.collective_device() == torch.device("cpu")  # no process group: CPU tensors


def test_torchvision_resnet18_trains_with_the_recipe_and_reloads(tmp_path):
    from diffaug_fast.config import train_config
    from diffaug_fast.runs import files
    from diffaug_fast.runs.checkpoint import load_verified
    from diffaug_fast.runs.classifiers import load_classifier
    from diffaug_fast.train.classifier import train_classifier

    torch.manual_seed(0)
    init = tmp_path / "imagenet.pth"
    torch.save(__import__("torchvision").models.resnet18(num_classes=1000).state_dict(), init)
    config = train_config("quick", model="resnet18", init=str(init), train_limit=128, batch_size=32, epochs=2,
                          diffaug="off", de_timesteps=[], eval_limit=64, compile="off", lr=0.1, weight_decay=1e-4,
                          nesterov=False, lr_schedule="step", lr_step_epochs=1, warmup_steps=0, log_every=1)
    run = tmp_path / "run"
    from diffaug_fast.data import load_dataset

    metrics = train_classifier(config, run, progress=False, test_data=load_dataset("fmnist", "test", limit=64))
    assert metrics["step"] == 8 and 0 <= metrics["clean_acc"] <= 1
    assert json.loads((run / files.METRICS).read_text())["step"] == 8
    logged = [json.loads(line)["lr"] for line in (run / files.METRICS_LOG).read_text().splitlines()]
    assert logged == pytest.approx([0.1 * 0.1 ** (k // 4) for k in range(1, 9)])  # 4 steps per epoch
    state = load_verified(run / files.CHECKPOINT)
    assert state["opt"]["param_groups"][0]["nesterov"] is False
    model, saved = load_classifier(run)
    assert saved.model.arch == "resnet18" and saved.model.init == str(init)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key].to(value.device)), key
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
