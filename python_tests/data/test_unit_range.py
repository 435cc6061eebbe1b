"""uint8 <-> [-1, 1]: the one conversion every loader, sampler and metric shares."""
import pytest
import torch

from diffaug_fast.data.views import to_uint8, to_unit_range


def test_every_grey_level_round_trips():
    grey = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = to_unit_range(grey)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.equal(to_uint8(x), grey)
    assert to_uint8(grey) is grey  # uint8 passes through


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_out_of_range_is_clamped_and_rounded(dtype):
    x = torch.tensor([-3.0, -1.0, 1 / 255, 0.0, 0.5, 1.0, 7.0], dtype=dtype)
    expected = ((x.double().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(to_uint8(x), expected)
    assert to_uint8(x)[[0, -1]].tolist() == [0, 255]


def test_non_contiguous_input():
    grey = torch.randint(0, 256, (2, 3, 9, 7), dtype=torch.uint8)
    x = to_unit_range(grey).transpose(-1, -2)
    assert torch.equal(to_uint8(x), grey.transpose(-1, -2))
