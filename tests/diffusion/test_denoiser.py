import torch

from difforge.diffusion.denoiser import Denoiser, alpha_bar_at, dynamic_threshold
from difforge.diffusion.objective import Objective, drop_labels, elementwise_loss
from difforge.diffusion.schedule import Schedule


class ToyNet(torch.nn.Module):
    """Output depends on x, t and y so conditional / unconditional predictions differ."""

    def __init__(self, num_classes=3, out_mult=1):
        super().__init__()
        self.emb = torch.nn.Embedding(num_classes + 1, 2)
        self.out_mult = out_mult
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        e = self.emb(y) if y is not None else torch.zeros(x.shape[0], 2)
        out = 0.3 * x + e[:, :1, None, None] + 1e-4 * t.float()[:, None, None, None]
        return torch.cat([out] * self.out_mult, dim=1)


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 2, 4, 4, generator=g), torch.tensor([10, 200, 500, 900]), torch.tensor([0, 1, 2, 1])


def test_cfg_scale_one_equals_conditional_and_single_forward():
    net = ToyNet()
    sched = Schedule.named("linear", 1000)
    x, t, y = _inputs()
    plain = Denoiser(net, sched, num_classes=3, cfg_scale=1.0, clip_x0=False)(x, t, y)
    assert net.calls == 1
    cond = net(x, t, y)
    assert torch.allclose(plain.eps, cond)


def test_cfg_is_batched_and_linear():
    net = ToyNet()
    sched = Schedule.named("linear", 1000)
    x, t, y = _inputs()
    net.calls = 0
    out = Denoiser(net, sched, num_classes=3, cfg_scale=4.0, clip_x0=False)(x, t, y)
    assert net.calls == 1  # cond + uncond in one forward
    cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, 3))
    assert torch.allclose(out.eps, uncond + 4.0 * (cond - uncond), atol=1e-6)
    zero = Denoiser(net, sched, num_classes=3, cfg_scale=0.0, clip_x0=False)(x, t, y)
    assert torch.allclose(zero.eps, uncond, atol=1e-6)


def test_x0_clipping_keeps_eps_consistent():
    net = ToyNet()
    sched = Schedule.named("linear", 1000)
    x, t, y = _inputs()
    x = x * 10
    out = Denoiser(net, sched, num_classes=3, target="x0", clip_x0=True)(x, t, y)
    assert out.x0.abs().max() <= 1.0
    ab = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(ab.sqrt() * out.x0 + (1 - ab).sqrt() * out.eps, x, atol=1e-4)


def test_learned_sigma_split():
    net = ToyNet(out_mult=2)
    sched = Schedule.named("linear", 1000)
    x, t, y = _inputs()
    out = Denoiser(net, sched, num_classes=3, learn_sigma=True, clip_x0=False)(x, t, y)
    assert out.eps.shape == x.shape and out.var_frac.shape == x.shape
    assert (out.var_frac >= 0).all() and (out.var_frac <= 1).all()


def test_alpha_bar_at_exact_on_integers_and_monotone_between():
    s = Schedule.named("cosine", 1000)
    t = torch.tensor([0.0, 1.0, 500.0, 999.0])
    assert torch.allclose(alpha_bar_at(s, t), s.alphas_cumprod[[0, 1, 500, 999]], rtol=1e-10)
    mid = alpha_bar_at(s, torch.tensor([500.5]))
    assert s.alphas_cumprod[501] < mid < s.alphas_cumprod[500]


def test_dynamic_threshold():
    x = torch.tensor([[0.5, -3.0, 2.0, 0.1]])
    out = dynamic_threshold(x, 1.0)
    assert torch.allclose(out, x / 3.0)
    small = torch.tensor([[0.5, -0.2]])
    assert torch.allclose(dynamic_threshold(small, 0.9), small)


def test_label_dropout_rate():
    y = torch.zeros(200_000, dtype=torch.long)
    out = drop_labels(y, 0.1, 5, torch.Generator().manual_seed(0))
    rate = (out == 5).float().mean().item()
    assert abs(rate - 0.1) < 0.005
    assert ((out == 0) | (out == 5)).all()


def test_objective_losses_against_formulas():
    import pytest
    import torch.nn.functional as F

    p, q = torch.tensor([0.0, 2.0, -0.5]), torch.tensor([0.5, 0.0, -0.5])
    assert torch.allclose(elementwise_loss("mse", p, q), (p - q) ** 2)
    assert torch.allclose(elementwise_loss("l1", p, q), (p - q).abs())
    d = (p - q).abs()
    assert torch.allclose(elementwise_loss("huber", p, q), torch.where(d < 1, 0.5 * d**2, d - 0.5))
    assert torch.allclose(elementwise_loss("smooth_l1", p, q), F.smooth_l1_loss(p, q, reduction="none"))
    with pytest.raises(ValueError, match="mse"):
        elementwise_loss("l3", p, q)


def test_objective_zero_for_perfect_eps_network():
    sched = Schedule.named("linear", 100)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 1, 2, 2, generator=g), torch.randn(6, 1, 2, 2, generator=g)
    t = torch.randint(0, 100, (6,), generator=g)
    oracle = lambda x_t, tt, y: noise  # noqa: E731
    terms = Objective(sched, target="eps")(oracle, x0, t, noise)
    assert terms["loss"].shape == (6,) and terms["loss"].abs().max() < 1e-12
    ab = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    terms_v = Objective(sched, target="v")(lambda *_: v, x0, t, noise)
    assert terms_v["loss"].abs().max() < 1e-10


def test_ve_view_equals_the_vp_call_at_the_same_t():
    """x0_at_sigma(den, x_t / sqrt(ab), t, sigma_t) is den(x_t, t).x0, for a Denoiser and for a wrapper."""
    from difforge.diffusion.denoiser import x0_at_sigma
    from difforge.diffusion.guidance import TwoModelCFG
    from difforge.diffusion.schedule import sigmas, to_ve, to_vp, vp_coefs

    sched = Schedule.named("cosine", 1000)
    x_t, _, y = _inputs()
    x_t = x_t.double()
    base = Denoiser(ToyNet(), sched, num_classes=3, target="v", threshold=0.9)
    wrapped = TwoModelCFG(base, Denoiser(ToyNet(num_classes=0), sched, clip_x0=False), 2.0)
    for den in (base, wrapped):
        for step in (0, 37, 412.75, 999):
            t = torch.full((4,), step, dtype=torch.long if float(step).is_integer() else torch.float32)
            sigma = sigmas(sched, [step])[0]
            x = to_ve(x_t, sigma)
            a, _ = vp_coefs(alpha_bar_at(sched, t[:1].double()).item())
            torch.testing.assert_close(x, x_t / a, rtol=1e-12, atol=0)  # x = x_t / sqrt(ab) = x0 + sigma eps
            torch.testing.assert_close(to_vp(x, sigma), x_t, rtol=1e-14, atol=0)
            torch.testing.assert_close(x0_at_sigma(den, x, t, sigma, y), den(x_t, t, y).x0, rtol=1e-6, atol=1e-6)
