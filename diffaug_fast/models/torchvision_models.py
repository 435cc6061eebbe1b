"""Any torchvision classification model by name (``torchvision.models.list_models(module=torchvision.models)``:
resnet50, vit_b_16, convnext_tiny, efficientnet_b0, ...), built offline for the data at hand.

* ``weights=None`` always: nothing is downloaded. Pretrained weights the user holds come in through
  ``--init`` (models/pretrained.py).
* ``num_classes`` is the data's class count.
* A forward pre-hook feeds the model what torchvision's weights expect: grey images (1 channel) repeated to
  RGB, [-1, 1] mapped to [0, 1] and normalised by ImageNet's mean and std. It has no parameters, so the state
  dict is torchvision's own and ImageNet weights load unchanged.
* The model is tried once on the image size by a forward pass on the ``meta`` device (shapes only, no
  compute); a model that cannot take that size is refused with one line (e.g. VGG at 28 px: pass
  ``--image-size 224``). ViTs are built for the image size (a multiple of their patch size).
* torchvision models keep their own normalisation layers (BatchNorm, LayerNorm, ...): ``norm="group"``
  applies to our own classifiers only and is refused here.
"""
from __future__ import annotations

import difflib
from functools import cache

import torch
from torch import nn

PATCH = {"vit_b_16": 16, "vit_b_32": 32, "vit_l_16": 16, "vit_l_32": 32, "vit_h_14": 14}  # ViTs: patch size
NO_AUX = ("inception_v3", "googlenet")  # their auxiliary heads (a tuple of logits in training) are left out


@cache
def torchvision_names() -> tuple[str, ...]:
    """The classification models of ``torchvision.models``."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def close_matches(name: str, ours: tuple[str, ...]) -> str:
    """What to say about a classifier name that exists neither in ``ours`` nor in torchvision."""
    close = difflib.get_close_matches(name, (*ours, *torchvision_names()), n=4, cutoff=0.6)
    if close:
        return f"did you mean {', '.join(close)}?"
    return f"expected one of {', '.join(ours)} or a torchvision.models classifier (resnet50, vit_b_16, ...)"


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _imagenet_input(module: nn.Module, args: tuple):
    """The package's images in [-1, 1] as torchvision's models take them: grey repeated to RGB, then scaled to
    [0, 1] and normalised by ImageNet's mean and std (what its released weights, loaded by --init, expect)."""
    x = args[0]
    if x.dim() != 4:
        return None
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x + 1) * 0.5 - mean) / std, *args[1:]


def build_torchvision(name: str, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's ``name`` with ``num_classes`` outputs and random weights, for ``in_channels`` (1 or 3) x
    ``image_size`` x ``image_size`` images; ValueError (one line) when it cannot take them."""
    import torchvision

    if in_channels not in (1, 3):
        raise ValueError(f"torchvision's {name} takes 1-channel (repeated to RGB) or 3-channel images, got "
                         f"{in_channels} channels")
    kwargs = {}
    if name in PATCH:
        patch = PATCH[name]
        if image_size % patch:
            raise ValueError(f"torchvision's {name} cuts images into {patch}x{patch} patches: the image size must be "
                             f"a multiple of {patch}, got {image_size}; pass --image-size 224")
        kwargs["image_size"] = image_size
    if name in NO_AUX:
        kwargs.update(aux_logits=False, init_weights=True)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    model.register_forward_pre_hook(_imagenet_input)
    check_image_size(model, name, in_channels, image_size)
    return model


def check_image_size(model: nn.Module, name: str, in_channels: int, image_size: int) -> None:
    """One forward pass on the meta device (shapes only): a model that cannot take the size is refused."""
    state = {k: torch.empty_like(v, device="meta") for k, v in (*model.named_parameters(), *model.named_buffers())}
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = torch.func.functional_call(model, state, (torch.empty(1, in_channels, image_size, image_size,
                                                                        device="meta"),))
    except Exception as err:  # torchvision's own shape checks: RuntimeError, AssertionError, ...
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"torchvision's {name} cannot take {in_channels}x{image_size}x{image_size} images "
                         f"({reason}); it is made for 224x224: pass --image-size 224") from None
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError(f"torchvision's {name} does not return one row of logits per image; choose another model")
