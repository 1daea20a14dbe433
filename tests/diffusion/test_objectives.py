"""Improved-DDPM objectives: SNR weightings, the hybrid / KL losses, and short training runs with each."""

import math

import pytest
import torch

from difforge.config import Config
from difforge.diffusion.denoiser import Denoiser
from difforge.diffusion.likelihood import model_mean_log_var, vlb_terms_bits
from difforge.diffusion.objective import Objective, snr_loss_weight
from difforge.diffusion.schedule import Schedule, q_sample
from difforge.errors import ConfigError

SCHED = Schedule.named("linear", 200)


def _batch(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.randint(0, 256, (n, 2, 4, 4), generator=g).float() / 127.5 - 1.0)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 1, 17, 90, 150, 199])[:n]
    return x0, noise, t


def _as_target(target, eps_hat, x_t, t):
    """The output of a ``target`` network that makes the eps prediction ``eps_hat``."""
    ab = SCHED.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    x0_hat = (x_t - s * eps_hat) / a
    return {"eps": eps_hat, "x0": x0_hat, "v": a * eps_hat - s * x0_hat}[target]


@pytest.mark.parametrize("weighting", ["p2", "min_snr"])
def test_snr_weighting_means_the_same_for_every_target(weighting):
    """One underlying prediction, three parametrisations: the weighted L_simple must agree."""
    x0, noise, t = _batch()
    x_t = q_sample(SCHED, x0, t, noise)
    eps_hat = noise + 0.3 * torch.randn(noise.shape, generator=torch.Generator().manual_seed(5))
    losses = {}
    for target in ("eps", "x0", "v"):
        out = _as_target(target, eps_hat, x_t, t)
        obj = Objective(SCHED, target=target, weighting=weighting, p2_gamma=0.5, p2_k=1.0, snr_gamma=5.0)
        losses[target] = obj(lambda *_: out, x0, t, noise)["loss"]
    assert torch.allclose(losses["x0"], losses["eps"], rtol=1e-3, atol=1e-7)
    assert torch.allclose(losses["v"], losses["eps"], rtol=1e-3, atol=1e-7)
    # and the eps-space weights are the papers' formulas
    snr = SCHED.snr()[t]
    eps_mse = ((eps_hat - noise) ** 2).mean(dim=(1, 2, 3)).double()
    paper = (1.0 / (1.0 + snr) ** 0.5) if weighting == "p2" else snr.clamp(max=5.0) / snr
    assert torch.allclose(losses["eps"].double(), paper * eps_mse, rtol=1e-5)


def test_min_snr_weights_per_target_match_hang_et_al():
    snr = torch.tensor([0.01, 1.0, 5.0, 100.0], dtype=torch.float64)
    m = snr.clamp(max=5.0)
    assert torch.allclose(snr_loss_weight("min_snr", snr, "eps"), m / snr)
    assert torch.allclose(snr_loss_weight("min_snr", snr, "x0"), m)
    assert torch.allclose(snr_loss_weight("min_snr", snr, "v"), m / (snr + 1))
    assert torch.allclose(snr_loss_weight("p2", snr, "eps", p2_gamma=1.0, p2_k=1.0), 1 / (1 + snr))
    assert torch.equal(snr_loss_weight("none", snr, "x0"), torch.ones_like(snr))


def _learned_net(target, x0, noise, t, frac=0.3, err=0.2):
    """A learned-sigma network output of kind ``target`` (slightly wrong eps) and variance channels."""
    x_t = q_sample(SCHED, x0, t, noise)
    eps_hat = noise + err * torch.ones_like(noise)
    out = torch.cat([_as_target(target, eps_hat, x_t, t), torch.full_like(x0, 2 * frac - 1)], 1)
    return out.requires_grad_(True)


def test_hybrid_vb_trains_only_the_variance_and_matches_the_bound():
    x0, noise, t = _batch()
    out = _learned_net("eps", x0, noise, t)
    terms = Objective(SCHED, learn_sigma=True)(lambda *_: out, x0, t, noise)
    (g_total,) = torch.autograd.grad(terms["loss"].sum(), out)
    simple = Objective(SCHED)(lambda *_: out[:, :2], x0, t, noise)["loss"]
    (g_simple,) = torch.autograd.grad(simple.sum(), out)
    assert torch.allclose(g_total[:, :2], g_simple[:, :2])  # stop-gradient: the VLB does not move the mean
    assert g_total[:, 2:].abs().max() > 0
    # the training term is the evaluation bound's term for the same x_t
    x_t = q_sample(SCHED, x0, t, noise)
    den = Denoiser(lambda *_: out.detach(), SCHED, learn_sigma=True, clip_x0=False)
    mean, log_var = model_mean_log_var(SCHED, den(x_t, t), x_t, t, "learned")
    assert torch.allclose(terms["vb"], vlb_terms_bits(SCHED, x0, x_t, t, mean, log_var), rtol=1e-4, atol=1e-6)
    assert (terms["vb"] > 0).all()


@pytest.mark.parametrize("target", ["x0", "v"])
def test_learned_sigma_works_with_x0_and_v_targets(target):
    x0, noise, t = _batch()
    ref = Objective(SCHED, learn_sigma=True)(lambda *_: _learned_net("eps", x0, noise, t), x0, t, noise)
    got = Objective(SCHED, target=target, learn_sigma=True)(lambda *_: _learned_net(target, x0, noise, t), x0, t, noise)
    assert torch.allclose(got["vb"], ref["vb"], rtol=2e-3, atol=1e-5)
    kl_ref = Objective(SCHED, learn_sigma=True, use_kl=True)(lambda *_: _learned_net("eps", x0, noise, t), x0, t, noise)
    kl = Objective(SCHED, target=target, learn_sigma=True, use_kl=True)(lambda *_: _learned_net(target, x0, noise, t), x0, t, noise)
    assert torch.allclose(kl["loss"], kl_ref["loss"], rtol=2e-3, atol=1e-3)


def test_rescaling_follows_improved_diffusion():
    x0, noise, t = _batch()
    net = lambda *_: _learned_net("eps", x0, noise, t)  # noqa: E731
    for T in (200, 4000):
        sched = Schedule.named("linear", T)
        t_ = t * (T // 200)
        plain = Objective(sched, learn_sigma=True, rescale_learned_sigmas=False)(net, x0, t_, noise)
        scaled = Objective(sched, learn_sigma=True, rescale_learned_sigmas=True)(net, x0, t_, noise)
        kl = Objective(sched, learn_sigma=True, use_kl=True)(net, x0, t_, noise)
        assert torch.allclose(plain["loss"], plain["mse"] + plain["vb"])  # MSE: lambda = 1/T
        assert torch.allclose(scaled["loss"], scaled["mse"] + scaled["vb"] * T / 1000)  # RESCALED_MSE
        assert torch.allclose(kl["loss"], kl["vb"] * T)  # RESCALED_KL
        assert "mse" not in kl


def test_kl_with_fixed_variance_and_channel_checks():
    x0, noise, t = _batch()
    out = torch.zeros_like(x0, requires_grad=True)
    terms = Objective(SCHED, use_kl=True)(lambda *_: out, x0, t, noise)
    terms["loss"].sum().backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().max() > 0
    with pytest.raises(ValueError, match="needs 4"):
        Objective(SCHED, learn_sigma=True)(lambda *_: out, x0, t, noise)
    with pytest.raises(ValueError, match="min_snr"):
        Objective(SCHED, weighting="snr")


def test_config_fields_validate():
    fc = Config().override(use_kl=True, schedule_sampler="loss-second-moment").diffusion
    obj = Objective.from_config(SCHED, fc, learn_sigma=True)
    assert obj.use_kl and obj.learn_sigma and obj.rescale_learned_sigmas and obj.weighting == "none"
    obj = Objective.from_config(SCHED, Config().override(loss_weighting="p2", p2_gamma=0.5).diffusion)
    assert obj.weighting == "p2" and obj.p2_gamma == 0.5
    for bad, word in (
        (dict(schedule_sampler="importance"), "loss-second-moment"),
        (dict(loss_weighting="snr"), "min_snr"),
        (dict(use_kl=True, loss_weighting="min_snr"), "loss_weighting"),
        (dict(use_kl=True, loss="l1"), "use_kl"),
        (dict(snr_gamma=0.0), "snr_gamma"),
        (dict(p2_k=-1.0), "p2_k"),
        (dict(use_kl="yes"), "use_kl"),
    ):
        with pytest.raises(ConfigError, match=word):
            Config().override(**bad)


def test_cli_flags_and_improved_diffusion_aliases():
    from difforge.cli.main import build_parser
    from difforge.cli.train import overrides_from_args

    args = build_parser().parse_args([
        "train", "--learn_sigma", "True", "--use_kl", "--schedule_sampler", "loss-second-moment",
        "--rescale_learned_sigmas", "False", "--diffusion_steps", "100", "--noise_schedule", "cosine",
    ])
    o = overrides_from_args(args)
    assert o == dict(learn_sigma=True, use_kl=True, schedule_sampler="loss-second-moment",
                     rescale_learned_sigmas=False, diffusion_steps=100, noise_schedule="cosine")
    args = build_parser().parse_args(["train", "--learn-sigma", "--loss-weighting", "min_snr", "--snr_gamma", "3", "--p2_k", "2"])
    assert overrides_from_args(args) == dict(learn_sigma=True, loss_weighting="min_snr", snr_gamma=3.0, p2_k=2.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--use_kl", "maybe"])


# -- short training runs ---------------------------------------------------------------------------


def _fixed_eval(trainer, n=16, reps=2):
    """The objective's uniform-t average on fixed images, t grid and noise (no importance weights)."""
    from difforge.data.source import load_training_images

    data = load_training_images(trainer.config.data, progress=False)
    x = data.images[:n].float() / 127.5 - 1
    y = None if data.labels is None else data.labels[:n]
    T = trainer.task.schedule.num_steps
    g = torch.Generator().manual_seed(123)
    net = trainer.net
    was = net.training
    net.eval()
    total = 0.0
    with torch.no_grad():
        for r in range(reps):
            t = (torch.arange(n) * T // n + r) % T
            noise = torch.randn(x.shape, generator=g)
            total += trainer.task.objective(net, x, t, noise, y)["loss"].mean().item() / reps
    net.train(was)
    return total


@pytest.mark.parametrize(
    "name,settings",
    [
        ("simple", dict()),
        ("hybrid", dict(learn_sigma=True)),
        ("kl", dict(learn_sigma=True, use_kl=True, lr=1e-3)),
        ("kl-lsm", dict(learn_sigma=True, use_kl=True, lr=1e-3, schedule_sampler="loss-second-moment", diffusion_steps=25)),
    ],
)
def test_training_lowers_each_objective(tmp_path, name, settings):
    from difforge.train.trainer import Trainer
    from tests.conftest import tiny_overrides

    seen = {}

    def record(trainer, step, loss):
        if step == 1:
            seen["start"] = _fixed_eval(trainer)

    kw = dict(dict(max_steps=60, diffusion_steps=50, preview_steps=2, log_every=20), **settings)
    trainer = Trainer(progress=False, callbacks=[record], **tiny_overrides(tmp_path, run=name, **kw))
    result = trainer.fit()
    end = _fixed_eval(trainer)
    assert math.isfinite(end) and end < 0.8 * seen["start"], (seen["start"], end)
    if settings.get("schedule_sampler"):
        assert trainer.task.timestep_sampler.warmed_up()  # the importance weights were in use


def test_resume_with_loss_second_moment_is_exact(tmp_path):
    """Interrupt a hybrid run with importance sampling after its warm-up, resume: same run, bit for bit."""
    from safetensors.torch import load_file

    from difforge.modelfile import read_metadata
    from difforge.train.trainer import Trainer
    from tests.conftest import tiny_overrides

    kw = dict(max_steps=14, diffusion_steps=4, noise_schedule="cosine", learn_sigma=True, schedule_sampler="loss-second-moment",
              preview_steps=2, batch_size=8)
    full = Trainer(progress=False, **tiny_overrides(tmp_path, run="full", **kw)).fit()
    warm = {}

    def stop_at_8(trainer, step, loss):
        if step == 8:
            warm["at_stop"] = trainer.task.timestep_sampler.warmed_up()
            trainer.request_stop()

    part = Trainer(progress=False, callbacks=[stop_at_8], **tiny_overrides(tmp_path, run="part", **kw)).fit()
    assert part.interrupted and part.steps == 8 and warm["at_stop"]
    resumed = Trainer(resume=str(part.run_dir), progress=False).fit()
    assert resumed.steps == 14

    def losses(rd):
        return (rd / "metrics.csv").read_text().splitlines()[1:]

    assert [r.split(",")[2] for r in losses(full.run_dir)] == [r.split(",")[2] for r in losses(part.run_dir)]
    a = load_file(str(full.run_dir / "checkpoints/state.safetensors"))
    b = load_file(str(part.run_dir / "checkpoints/state.safetensors"))
    assert a.keys() == b.keys() and "extra/timestep_sampler/losses" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (a["extra/timestep_sampler/counts"] == 10).all()
    meta = read_metadata(full.model_file)["diffusion"]
    assert meta["schedule_sampler"] == "loss-second-moment" and meta["learn_sigma"] is True
    assert {"use_kl", "rescale_learned_sigmas", "loss_weighting", "p2_gamma", "p2_k", "snr_gamma"} <= set(meta)
