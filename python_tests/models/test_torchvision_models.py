"""Any torchvision classifier by name (offline, grey images repeated to RGB, image size checked) and ``--init``:
pretrained weights loaded before training with the classification head re-initialised."""
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from diffaug_fast.errors import DiffAugError
from diffaug_fast.models.build import build_model
from diffaug_fast.models.pretrained import head_name, load_init
from diffaug_fast.models.torchvision_models import torchvision_names


def test_names_are_torchvision_classifiers_only():
    names = torchvision_names()
    assert {"resnet18", "resnet50", "vit_b_16", "convnext_tiny", "efficientnet_b0"} <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names and "raft_large" not in names  # detection / optical flow


@pytest.mark.parametrize("name, channels, size", [("resnet18", 3, 32), ("resnet18", 1, 28),
                                                  ("mobilenet_v3_small", 1, 32)])
def test_build_and_forward(name, channels, size):
    model = build_model("clean", name, num_classes=7, in_channels=channels, image_size=size)
    x = torch.randn(2, channels, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if name == "resnet18":  # torchvision's own parameters: a grey image is repeated to the RGB stem
        assert model.conv1.weight.shape == (64, 3, 7, 7) and model.fc.out_features == 7


def test_grey_input_equals_its_rgb_repeat():
    model = build_model("clean", "resnet18", num_classes=4, in_channels=1, image_size=28).eval()
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(x), model(x.repeat(1, 3, 1, 1)))


def test_vit_built_for_the_image_size_or_refused():
    model = build_model("clean", "vit_b_16", num_classes=10, in_channels=3, image_size=32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match=r"vit_b_16 cuts images into 16x16 patches.*got 28; pass --image-size 224"):
        build_model("clean", "vit_b_16", num_classes=10, in_channels=1, image_size=28)


def test_too_small_images_refused_in_one_line():
    with pytest.raises(ValueError, match=r"densenet121 cannot take 1x28x28 images \(.*\); .*--image-size 224") as err:
        build_model("clean", "densenet121", num_classes=10, in_channels=1, image_size=28)
    assert "\n" not in str(err.value)


def test_unknown_name_and_group_norm():
    with pytest.raises(ValueError, match="unknown classifier 'resnet5'; did you mean resnet50"):
        build_model("clean", "resnet5")
    with pytest.raises(ValueError, match="torchvision's resnet18 keeps its own normalisation layers"):
        build_model("clean", "resnet18", norm="group")


def test_unknown_name_exits_2_with_close_matches(capsys):
    from diffaug_fast.cli import main

    assert main(["train", "--model", "convnext_tiyn"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "argument --model is 'convnext_tiyn', neither ours nor torchvision's" in err
    assert "did you mean convnext_tiny" in err


def _imagenet_resnet18(path):
    torch.manual_seed(1)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_init_loads_the_backbone_and_reinitialises_the_head(tmp_path, suffix):
    path = tmp_path / f"resnet18{suffix}"
    saved = _imagenet_resnet18(path)
    model = build_model("clean", "resnet18", num_classes=10, in_channels=1, image_size=28)
    fresh_head = model.fc.weight.detach().clone()
    line = load_init(model, path, "resnet18")
    assert "\n" not in line and "classification head fc re-initialised ([1000, 512] in the file, [10, 512] here)" in line
    assert head_name(model) == "fc"
    state = model.state_dict()
    for key, value in saved.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert torch.equal(model.fc.weight, fresh_head)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_init_with_the_same_classes_loads_everything(tmp_path):
    source = build_model("clean", "resnet18", num_classes=10, in_channels=1, image_size=28)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model("clean", "resnet18", num_classes=10, in_channels=1, image_size=28)
    line = load_init(model, tmp_path / "w.pt", "resnet18")
    assert "re-initialised" not in line and torch.equal(model.fc.weight, source.fc.weight)


def test_init_mismatch_and_unsafe_files_are_one_line_errors(tmp_path):
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    state["conv1.weight"] = state["conv1.weight"][:, :1]
    del state["layer4.1.bn2.bias"]
    torch.save(state, tmp_path / "bad.pth")
    model = build_model("clean", "resnet18", num_classes=10, in_channels=3, image_size=32)
    with pytest.raises(DiffAugError, match=r"does not fit resnet18: tensors 1 of another shape \(conv1.weight: "
                                           r"\[64, 1, 7, 7\] in the file, \[64, 3, 7, 7\] here\); 1 missing "
                                           r"\(layer4.1.bn2.bias\)"):
        load_init(model, tmp_path / "bad.pth", "resnet18")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module: weights_only refuses it
    with pytest.raises(DiffAugError, match="could not be read as a .pth state dict"):
        load_init(model, tmp_path / "module.pth", "resnet18")
    with pytest.raises(FileNotFoundError, match="argument --init: .*missing.pth does not exist"):
        load_init(model, tmp_path / "missing.pth", "resnet18")
