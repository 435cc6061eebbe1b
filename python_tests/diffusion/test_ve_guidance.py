"""Classifier guidance of a VE denoiser: sample() walks the VP-equivalent chain (x_vp = a*x_ve, a = 1/sqrt(1 +
sigma^2)); the classifier must see x_ve (what it was trained on) at its own t, and the gradient must be taken with
respect to the chain's x: ∇_{x_vp} log p(y | x_vp/a) = (1/a)·∇_{x_ve} log p(y | x_ve)."""
import torch

from diffaug_fast.diffusion import Denoiser, linear_vp, ve_geometric
from diffaug_fast.diffusion.sampling import chain_guidance, classifier_guidance, eps_model, sample
from diffaug_fast.diffusion.unet import UNetModel
from diffaug_fast.diffusion.ve import VEScoreNet

TINY = dict(image_size=8, in_channels=1, num_channels=32, num_res_blocks=1, attention_resolutions="",
            channel_mult=(1, 2))
SHAPE = (3, 1, 8, 8)
CLASSES = 5


def _ve_denoiser():
    torch.manual_seed(0)
    net = VEScoreNet(UNetModel(**TINY), 0.01, 50.0).eval()
    return Denoiser(net, ve_geometric(1000, 0.01, 50.0), parametrization="score", condition="sigma", clip=True)


def _vp_denoiser():
    torch.manual_seed(0)
    return Denoiser(UNetModel(**TINY).eval(), linear_vp(), parametrization="eps", clip=True)


class LinearSoftmax(torch.nn.Module):
    """logits = W x + b + c*t: log p(y|x) = w_y·x + b_y + c_y*t - logsumexp(...), whose gradient is known in closed
    form. Records what it is shown."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        features = SHAPE[1] * SHAPE[2] * SHAPE[3]
        self.w = torch.randn(CLASSES, features, generator=g) * 0.2
        self.b = torch.randn(CLASSES, generator=g)
        self.c = torch.randn(CLASSES, generator=g) * 1e-3
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x.detach().clone(), t.clone()))
        return x.flatten(1) @ self.w.T + self.b + t.float()[:, None] * self.c

    def log_p_grad(self, x, t, labels):
        """Closed form ∇_x log p(y|x, t) = w_y - softmax(logits)·W, float64."""
        logits = x.double().flatten(1) @ self.w.double().T + self.b.double() + t.double()[:, None] * self.c.double()
        return (self.w.double()[labels] - torch.softmax(logits, -1) @ self.w.double()).view(x.shape)


def _guidance(denoiser, classifier, labels):
    # as the sample command builds it (eval/guidance.py): the classifier takes grid indices of its denoiser
    index = denoiser.schedule.timesteps
    return chain_guidance(denoiser, classifier_guidance(lambda x, t: classifier(x, torch.searchsorted(index, t)),
                                                        labels))


def test_ve_guidance_is_the_closed_form_gradient_on_the_chain():
    den = _ve_denoiser()
    _, chain = eps_model(den)
    clf, labels = LinearSoftmax(), torch.tensor([0, 3, 4])
    guidance = _guidance(den, clf, labels)
    t = torch.tensor([0, 400, 999])
    a = chain.signal[t].view(-1, 1, 1, 1)  # float64
    x_ve = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)) * den.schedule.sigmas[t].float().view(
        -1, 1, 1, 1)
    x_vp = (x_ve.double() * a).float()
    got = guidance(x_vp, chain.model_timesteps(t))
    # the classifier saw x_ve and its own t
    seen_x, seen_t = clf.seen[-1]
    torch.testing.assert_close(seen_x.double(), x_vp.double() / a, rtol=1e-6, atol=1e-6)
    assert torch.equal(seen_t, t)
    want = clf.log_p_grad(x_vp.double() / a, t, labels) / a
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    # at sigma = 50 the chain's gradient is ~50x the classifier's: the scaling is not lost
    ratio = got[2].double().norm() / clf.log_p_grad(x_vp.double() / a, t, labels)[2].norm()
    assert abs(float(ratio) - float(1 / a[2])) < 1e-3 * float(1 / a[2])


@torch.no_grad()
def test_guided_ve_sampling_shows_the_classifier_what_the_denoiser_sees():
    """At every step of a guided VE chain the classifier's input is the denoiser's input (x_ve, grid index t)."""
    den = _ve_denoiser()
    model, chain = eps_model(den)
    shown = []
    model_output = den.model_output

    def recording(x, t):
        shown.append((x.clone(), t.clone()))
        return model_output(x, t)

    den.model_output = recording
    clf, labels = LinearSoftmax(), torch.tensor([1, 2, 3])
    out = sample(model, SHAPE, chain, steps="ddim5", guidance=_guidance(den, clf, labels), scale=2.0, seed=4,
                 progress=False)
    assert torch.isfinite(out).all()
    assert len(shown) == len(clf.seen) == 5
    for (x_den, t_den), (x_clf, t_clf) in zip(shown, clf.seen):
        torch.testing.assert_close(x_clf, x_den)
        assert torch.equal(t_clf, t_den)
    assert float(clf.seen[0][0].std()) > 5  # x_ve at ddim5's first sigma (~10), not the unit-scale x_vp


def test_vp_denoiser_guidance_is_unchanged():
    den = _vp_denoiser()
    model, chain = eps_model(den)
    clf, labels = LinearSoftmax(), torch.tensor([0, 1, 2])
    plain = classifier_guidance(lambda x, t: clf(x, t), labels)
    assert chain_guidance(den, plain) is plain
    x, t = torch.randn(SHAPE), torch.tensor([5, 500, 995])
    torch.testing.assert_close(plain(x, t).double(), clf.log_p_grad(x, t, labels), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        a = sample(model, SHAPE, chain, steps="ddim4", guidance=chain_guidance(den, plain), scale=3.0, seed=1,
                   progress=False)
        b = sample(model, SHAPE, chain, steps="ddim4", guidance=plain, scale=3.0, seed=1, progress=False)
    assert torch.equal(a, b)
