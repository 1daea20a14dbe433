"""Classifier guidance and two-model classifier-free guidance against exact references.

The reference problem is a Gaussian mixture whose denoiser and posterior p(y | x_t) are exact
(``gmm.py``): there, guidance with scale 1 must turn the mixture's denoiser into the class's own.
"""

import math

import pytest
import torch

from difforge.diffusion.denoiser import Denoiser, Prediction
from difforge.diffusion.guidance import ClassifierGuided, TwoModelCFG, class_log_prob_grad, guidance_mode
from difforge.diffusion.samplers import available, get_sampler
from difforge.diffusion.schedule import Schedule
from difforge.diffusion.timesteps import alpha_bars, default_spacing, sampling_timesteps
from difforge.errors import UserError
from difforge.models import registry

try:  # tests/ may or may not be a package
    from .gmm import ClassConditional, overlapping_pair, three_blobs
except ImportError:
    from gmm import ClassConditional, overlapping_pair, three_blobs

SCHEDULE = Schedule.named("linear", 1000)


@pytest.fixture(scope="module")
def blobs():
    return three_blobs(SCHEDULE)


def _x(n, seed=0, shape=(2,)):
    return torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _sample(name, denoiser, x_T, y, steps, seed=1):
    ts = sampling_timesteps(SCHEDULE.num_steps, steps, default_spacing(name), SCHEDULE)
    with torch.inference_mode():  # as the pipeline runs them: guidance must still get its gradient
        return get_sampler(name)(denoiser, x_T, SCHEDULE, ts, y=y, generator=torch.Generator().manual_seed(seed))


def _fd_grad(f, x, h=1e-5):
    """Central differences of the per-sample scalar f(x) (B,) in every coordinate."""
    flat = x.reshape(x.shape[0], -1)
    out = torch.zeros_like(flat)
    for j in range(flat.shape[1]):
        e = torch.zeros_like(flat)
        e[:, j] = h
        out[:, j] = (f((flat + e).reshape(x.shape)) - f((flat - e).reshape(x.shape))) / (2 * h)
    return out.reshape(x.shape)


def _fd_directional(f, x, n_dirs=6, h=1e-5, seed=0):
    """Central differences of f along random directions: (B, n_dirs) directional derivatives and the directions."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_dirs, *x.shape, dtype=x.dtype, generator=gen)
    d = torch.stack([(f(x + h * v) - f(x - h * v)) / (2 * h) for v in dirs], 1)
    return d, dirs


# -- the gradient -------------------------------------------------------------------------------

def test_gradient_matches_finite_differences_of_a_network():
    torch.manual_seed(0)
    net = registry.build("classifier-tiny", image_size=8, in_channels=1, num_classes=3, channel_mult=[1, 2]).double().eval()
    for p in net.parameters():  # untrained zero-init branches would make the logits almost flat
        p.data.add_(0.2 * torch.randn_like(p))
    x = _x(2, seed=1, shape=(1, 8, 8))
    y = torch.tensor([2, 0])
    for t in (torch.tensor([10, 700]), torch.tensor([333.25, 45.5])):
        def logp(v):
            with torch.no_grad():
                return torch.log_softmax(net(v, t), -1)[torch.arange(2), y]

        with torch.inference_mode():
            g = class_log_prob_grad(net, x, t, y)
        ref, dirs = _fd_directional(logp, x)
        got = torch.stack([(g * v).flatten(1).sum(1) for v in dirs], 1)
        assert ref.abs().max() > 1e-2  # the test has something to compare
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_gradient_matches_finite_differences_of_the_exact_posterior(blobs):
    x = _x(5, seed=2)
    y = torch.tensor([0, 1, 2, 2, 1])
    t = torch.tensor([5, 100, 400, 650.5, 900])
    g = class_log_prob_grad(blobs.classifier, x, t, y)
    ref = _fd_grad(lambda v: torch.log_softmax(blobs.classifier(v, t), -1)[torch.arange(5), y], x)
    torch.testing.assert_close(g, ref, rtol=1e-6, atol=1e-7)


# -- the eps shift (score form) ----------------------------------------------------------------

@pytest.mark.parametrize("t", [3, 250, 620.75, 999])
def test_scale_one_turns_the_mixture_into_the_class(blobs, t):
    """grad log p(x_t) + grad log p(y | x_t) = grad log p(x_t | y): exactly the class's denoiser."""
    x, y = _x(6, seed=3) * 1.3, torch.tensor([0, 1, 2, 0, 1, 2])
    guided = ClassifierGuided(blobs, blobs.classifier, 1.0)(x, torch.full((6,), t), y)
    ref = ClassConditional(blobs)(x, torch.full((6,), t), y)
    torch.testing.assert_close(guided.eps, ref.eps, rtol=1e-9, atol=1e-10)
    a = float(SCHEDULE.alphas_cumprod[int(t)].sqrt())  # x0 = (x_t - s eps) / a magnifies eps's rounding by 1/a
    torch.testing.assert_close(guided.x0, ref.x0, rtol=1e-9, atol=1e-10 / a)


def test_eps_shift_formula_with_a_network_denoiser():
    """eps' = eps - s sqrt(1 - ab) grad log p(y|x_t), x0' = (x_t - sqrt(1 - ab) eps') / sqrt(ab), then clipped."""
    net = _tiny_net(1)
    clf = registry.build("classifier-tiny", image_size=8, in_channels=1, num_classes=2, channel_mult=[1, 2]).double()
    for p in clf.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    base = Denoiser(net, SCHEDULE, clip_x0=False)
    x, t, y, s = _x(3, seed=4, shape=(1, 8, 8)), torch.tensor([40, 500, 980]), torch.tensor([0, 1, 1]), 3.0
    with torch.no_grad():
        g = _fd_grad(lambda v: torch.log_softmax(clf(v, t), -1)[torch.arange(3), y], x)
    ab = SCHEDULE.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    eps = base(x, t).eps - s * (1 - ab).sqrt() * g
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    out = ClassifierGuided(base, clf, s)(x, t, y)
    torch.testing.assert_close(out.eps, eps, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.x0, x0, rtol=1e-6, atol=1e-7)
    # a clipping base: its (clipped, consistent) eps is shifted, and the new x0 clipped again
    clipping = base.with_options(clip_x0=True)
    eps_c = clipping(x, t).eps - s * (1 - ab).sqrt() * g
    x0_c = (x - (1 - ab).sqrt() * eps_c) / ab.sqrt()
    clipped = ClassifierGuided(clipping, clf, s)(x, t, y)
    assert clipped.x0.abs().max() <= 1.0 and x0_c.abs().max() > 1.0
    torch.testing.assert_close(clipped.x0, x0_c.clamp(-1, 1))
    torch.testing.assert_close(x, ab.sqrt() * clipped.x0 + (1 - ab).sqrt() * clipped.eps)  # eps consistent


def test_scale_zero_is_the_base_and_calls_no_classifier(blobs):
    def boom(x, t):
        raise AssertionError("classifier called at scale 0")

    x = _x(4)
    out = ClassifierGuided(blobs, boom, 0.0)(x, torch.full((4,), 300), torch.zeros(4, dtype=torch.long))
    ref = blobs(x, torch.full((4,), 300))
    assert torch.equal(out.eps, ref.eps) and torch.equal(out.x0, ref.x0)


def test_guidance_needs_labels(blobs):
    with pytest.raises(UserError, match="needs a class"):
        ClassifierGuided(blobs, blobs.classifier, 2.0)(_x(2), torch.full((2,), 10), None)


# -- the ddpm mean shift (Alg. 1) ----------------------------------------------------------------

class _WithVariance:
    """The mixture's prediction plus a fixed learned-variance fraction, to exercise variance='learned'."""

    def __init__(self, base, v):
        self.base, self.v, self.schedule = base, v, base.schedule

    def __call__(self, x, t, y=None):
        p = self.base(x, t, y)
        return Prediction(eps=p.eps, x0=p.x0, var_frac=torch.full_like(x, self.v))


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned"])
def test_ddpm_mean_moves_by_variance_times_scaled_gradient(blobs, variance):
    base = _WithVariance(blobs, 0.3) if variance == "learned" else blobs
    x_T, y, s = _x(7, seed=5), torch.tensor([0, 1, 2, 0, 1, 2, 2]), 2.5
    ts = [600, 550, 0]
    ab = alpha_bars(SCHEDULE, ts)
    beta = 1 - ab[0] / ab[1]
    post = beta * (1 - ab[1]) / (1 - ab[0])
    var = {"fixed_small": post, "fixed_large": beta, "learned": math.exp(0.3 * math.log(beta) + 0.7 * math.log(post))}[variance]
    firsts = []
    for d in (base, ClassifierGuided(base, blobs.classifier, s, mode="mean")):
        seen = {}
        get_sampler("ddpm")(d, x_T, SCHEDULE, ts, y=y, generator=torch.Generator().manual_seed(0), variance=variance,
                            callback=lambda i, x, x0: seen.setdefault(i, x))
        firsts.append(seen[0])
    g = _fd_grad(lambda v: torch.log_softmax(blobs.classifier(v, torch.full((7,), 600)), -1)[torch.arange(7), y], x_T)
    torch.testing.assert_close(firsts[1] - firsts[0], var * s * g, rtol=1e-6, atol=1e-9)


def test_guidance_mode_follows_guided_diffusion():
    assert guidance_mode("ddpm") == "mean"
    assert {guidance_mode(n) for n in available() if n != "ddpm"} == {"eps"}


# -- more guidance, more of the class ----------------------------------------------------------

@pytest.mark.parametrize("name,steps", [("ddim", 50), ("ddpm", 100)])
def test_share_of_the_class_rises_monotonically_with_the_scale(name, steps):
    g = overlapping_pair(SCHEDULE)
    n = 3000
    x_T, y = _x(n, seed=6), torch.ones(n, dtype=torch.long)
    shares = []
    for s in (0.0, 0.5, 1.0, 2.0, 3.0):
        x = _sample(name, ClassifierGuided(g, g.classifier, s, mode=guidance_mode(name)), x_T, y, steps)
        shares.append(g.mode_fractions(x)[1].item())
    assert all(b > a for a, b in zip(shares, shares[1:])), shares
    assert abs(shares[0] - g.mode_fractions_truth()[1].item()) < 0.04, shares  # s = 0: the data's own share
    if name == "ddim":  # s = 1 with the score form: samples of the class itself (ddpm's mean form is first order in beta)
        truth = g.mode_fractions(g.component(1).sample(100_000, torch.Generator().manual_seed(7)))[1].item()
        assert abs(shares[2] - truth) < 0.04, (shares, truth)
    assert shares[-1] > 0.97, shares


# -- two-model classifier-free guidance --------------------------------------------------------

class _ToyNet(torch.nn.Module):
    """A small float64 network under the network contract (label row ``num_classes`` = null class)."""

    def __init__(self, num_classes=0, learn_sigma=False, channels=1):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = torch.nn.Conv2d(channels, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, channels * (2 if learn_sigma else 1), 3, padding=1)
        self.label = torch.nn.Embedding(num_classes + 1, 8) if num_classes else None

    def forward(self, x, t, y=None):
        h = self.conv1(x) + torch.sin(torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1) / 150.0)
        if self.label is not None:
            y = torch.full((x.shape[0],), self.num_classes) if y is None else y
            h = h + self.label(y)[:, :, None, None]
        return self.conv2(torch.tanh(h))


def _tiny_net(seed, num_classes=0, learn_sigma=False):
    torch.manual_seed(seed)
    return _ToyNet(num_classes, learn_sigma).double()


@pytest.mark.parametrize("target,learn_sigma,clip", [("eps", False, True), ("v", True, True), ("x0", False, False)])
def test_two_model_cfg_with_w_zero_is_the_conditional_model(target, learn_sigma, clip):
    cond = Denoiser(_tiny_net(0, 3, learn_sigma), SCHEDULE, target=target, learn_sigma=learn_sigma, num_classes=3, cfg_scale=1.0, clip_x0=clip)
    uncond = Denoiser(_tiny_net(1), SCHEDULE, target="eps", clip_x0=clip)
    x, t, y = _x(3, seed=8, shape=(1, 8, 8)) * 2, torch.tensor([5, 500, 990]), torch.tensor([0, 2, 1])
    out, ref = TwoModelCFG(cond, uncond, 0.0)(x, t, y), cond(x, t, y)
    # (a Denoiser hands out its network's output as float32: compare to float32 rounding)
    torch.testing.assert_close(out.eps, ref.eps, rtol=1e-6, atol=1e-6, check_dtype=False)
    torch.testing.assert_close(out.x0, ref.x0, rtol=1e-6, atol=1e-6, check_dtype=False)
    if learn_sigma:
        assert torch.equal(out.var_frac, ref.var_frac)
    guided = TwoModelCFG(cond, uncond, 1.5)(x, t, y)
    assert (guided.eps - ref.eps).abs().max() > 1e-3  # w matters


def test_two_model_cfg_formula_and_its_relation_to_built_in_cfg():
    """eps = (1 + w) eps_c - w eps_u; one network with its null class as the second model = built-in s = 1 + w."""
    net = _tiny_net(2, num_classes=3)
    x, t, y, w = _x(3, seed=9, shape=(1, 8, 8)), torch.tensor([30, 400, 800]), torch.tensor([2, 0, 1]), 1.7
    for clip in (False, True):
        cond = Denoiser(net, SCHEDULE, num_classes=3, cfg_scale=1.0, clip_x0=clip)
        null = Denoiser(net, SCHEDULE, num_classes=0, clip_x0=clip)  # y=None: the null class
        out = TwoModelCFG(cond, null, w)(x, t, y)
        if not clip:
            eps = (1 + w) * net(x, t, y) - w * net(x, t, torch.full_like(y, 3))
            torch.testing.assert_close(out.eps, eps, rtol=1e-5, atol=1e-5, check_dtype=False)  # float32 outputs
        builtin = Denoiser(net, SCHEDULE, num_classes=3, cfg_scale=1 + w, clip_x0=clip)(x, t, y)
        torch.testing.assert_close(out.eps, builtin.eps, rtol=1e-5, atol=1e-5, check_dtype=False)
        torch.testing.assert_close(out.x0, builtin.x0, rtol=1e-5, atol=1e-5, check_dtype=False)
        wrong = Denoiser(net, SCHEDULE, num_classes=3, cfg_scale=w, clip_x0=clip)(x, t, y)
        assert (out.eps - wrong.eps).abs().max() > 1e-2  # s = w would be a different guidance


def test_two_model_cfg_refuses_different_schedules():
    cond = Denoiser(_tiny_net(0, 3), SCHEDULE, num_classes=3)
    uncond = Denoiser(_tiny_net(1), Schedule.named("cosine", 1000))
    with pytest.raises(UserError, match="different noise schedules"):
        TwoModelCFG(cond, uncond, 1.0)


# -- every sampler, with every kind of guidance --------------------------------------------------

@pytest.mark.parametrize("name", available())
def test_every_sampler_takes_guidance(blobs, name):
    n = 600
    x_T, y = _x(n, seed=10), torch.full((n,), 2)
    plain = _sample(name, blobs, x_T, y, 30)
    assert blobs.mode_fractions(plain)[2] < 0.4  # unguided: the class's prior share (0.2)
    modes = ["eps", "mean"] if name == "ddpm" else ["eps"]
    for mode in modes:
        x = _sample(name, ClassifierGuided(blobs, blobs.classifier, 1.0, mode=mode), x_T, y, 30)
        # the mean form (Alg. 1) is first order in beta: with 30 respaced steps it guides a little less
        assert blobs.mode_fractions(x)[2] > (0.95 if mode == "eps" else 0.85), (mode, blobs.mode_fractions(x))
    cond = ClassConditional(blobs)
    same = _sample(name, TwoModelCFG(cond, blobs, 0.0), x_T, y, 30)
    torch.testing.assert_close(same, _sample(name, cond, x_T, y, 30), rtol=1e-9, atol=1e-9)  # w=0: the conditional model
    x = _sample(name, TwoModelCFG(cond, blobs, 2.0), x_T, y, 30)
    assert blobs.mode_fractions(x)[2] > 0.95
    both = ClassifierGuided(TwoModelCFG(cond, blobs, 1.0), blobs.classifier, 1.0, mode=guidance_mode(name))
    x = _sample(name, both, x_T, y, 30)
    assert torch.isfinite(x).all() and blobs.mode_fractions(x)[2] > 0.95
