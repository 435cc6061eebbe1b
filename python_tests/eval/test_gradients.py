"""Gradient pictures: the class gradient and its alignment number on a classifier with a known gradient."""
import pytest
import torch

import diffaug_fast
from diffaug_fast.eval.gradients import class_gradient, cosine, gradient_study, save_gradient_grid


class Linear(torch.nn.Module):
    """logits_k = <w_k, x>: ∇_x log p(y|x) = w_y - Σ_k p_k w_k, known in closed form."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x, t):
        return x.flatten(1) @ self.w.T


def test_class_gradient_matches_closed_form():
    torch.manual_seed(0)
    w = torch.randn(3, 16)
    x = torch.randn(4, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 1])
    p = torch.softmax(x.flatten(1) @ w.T, -1)
    expected = (w[y] - p @ w).view(4, 1, 4, 4)
    torch.testing.assert_close(class_gradient(Linear(w), x, torch.zeros(4), y), expected)


@pytest.mark.slow  # the shipped denoiser on real images
def test_alignment_is_one_for_a_gradient_pointing_home(tmp_path):
    """A 'classifier' whose log-prob is -|x - x0|^2/2 has gradient x0 - x_t: cosine exactly 1."""
    den = diffaug_fast.pretrained("fmnist")
    images = diffaug_fast.data.load_fashion_mnist("test", limit=3)[0]

    class Home(torch.nn.Module):
        def forward(self, x, t):
            d = -0.5 * (x - images).square().flatten(1).sum(1, keepdim=True)
            return torch.cat([d, torch.zeros_like(d)], 1)  # log p(0|x) = d - log(e^d + 1): gradient ∝ ∇d

    study = gradient_study({"home": Home()}, den, images, torch.zeros(3, dtype=torch.long), [100, 500])
    for t in (100, 500):
        torch.testing.assert_close(study["cosine"]["home"][t], torch.ones(3), atol=1e-5, rtol=0)
    assert cosine(torch.ones(1, 4), -torch.ones(1, 4)).item() == -1.0
    path = save_gradient_grid(study, images, tmp_path / "g.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_picture_draws_only_the_first_rows(tmp_path):
    """The alignment is averaged over many images; the picture keeps the first few rows (5 images, 2 rows)."""
    from PIL import Image

    images = torch.rand(5, 1, 4, 4) * 2 - 1
    study = {"x_t": {100: images}, "grad": {"a": {100: torch.randn(5, 1, 4, 4)}, "b": {100: torch.randn(5, 1, 4, 4)}}}
    with Image.open(save_gradient_grid(study, images, tmp_path / "g.png", rows=2)) as picture:
        assert picture.size == (4 * 5 + 1, 2 * 5 + 1)  # 4 columns (x0, x_t, a, b) and 2 rows of 4 px + 1 px padding
    with Image.open(save_gradient_grid(study, images, tmp_path / "all.png")) as picture:
        assert picture.size[1] == 5 * 5 + 1
