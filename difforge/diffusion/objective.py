"""The training objective: q_sample, targets, per-sample losses, weighting, the hybrid VLB.

Losses are returned per sample (a dict of (B,) tensors, guided-diffusion's habit), so
importance weights, SNR weighting or extra terms multiply or add instead of forking the code.
The trainer only averages ``terms["loss"] * weights`` (the timestep sampler's importance
weights) and logs the rest.

Three objectives (Nichol & Dhariwal 2021, "Improved DDPM"):

- ``L_simple``: regress the target (eps / x0 / v) of noised data; optionally SNR-weighted
  (:func:`snr_loss_weight`). The default.
- ``L_hybrid = L_simple + lambda L_vlb`` when the network learns its variance (``learn_sigma``):
  the VLB term trains only the variance channels, as it sees the mean through a stop-gradient.
  With one uniformly drawn t per sample, T L_t estimates L_vlb, so lambda = 0.001 becomes the
  factor T / 1000 on the per-t term: exactly improved-diffusion's ``rescale_learned_sigmas``
  (RESCALED_MSE). Without rescaling the per-t term is added as is (improved-diffusion's MSE).
- ``L_vlb`` alone (``use_kl``): T L_t per sample (improved-diffusion's RESCALED_KL), training
  mean and variance. With a fixed variance the KL uses ``fixed_large``.

The VLB terms are in bits/dim (:mod:`difforge.diffusion.likelihood`); the model mean is the
posterior mean at the x0 predicted by the network, so every target works with learned sigma.
Training reads frac = (v + 1) / 2 unclamped, as improved-diffusion does (the gradient never
vanishes); the Denoiser, hence sampling and ``difforge nll``, clamps v to [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from .denoiser import check_target, to_eps_x0, training_target
from .likelihood import extract_log_variance, vlb_terms_bits
from .schedule import Schedule, extract_vp_coefs, q_posterior, q_sample
from .timestep_samplers import LossSecondMomentTimesteps, UniformTimesteps, make_timestep_sampler  # noqa: F401

LOSSES = ("mse", "l1", "huber", "smooth_l1")
WEIGHTINGS = ("none", "p2", "min_snr")


def elementwise_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Unreduced loss of ``kind``: mse, l1, huber (delta) or smooth_l1 (beta = delta)."""
    if kind == "mse":
        return (pred - target) ** 2
    if kind == "l1":
        return (pred - target).abs()
    if kind == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=delta)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="none", beta=delta)
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def drop_labels(y: torch.Tensor, p: float, num_classes: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each label by the null class ``num_classes`` with probability ``p`` (CFG training)."""
    if p <= 0:
        return y
    u = torch.rand(y.shape, generator=generator, device="cpu" if generator is None else generator.device).to(y.device)
    return torch.where(u < p, torch.full_like(y, num_classes), y)



def snr_loss_weight(
    kind: str, snr: torch.Tensor, target: str, *, p2_gamma: float = 1.0, p2_k: float = 1.0, snr_gamma: float = 5.0
) -> torch.Tensor:
    """Per-sample weight of the L_simple term of ``target`` for an SNR weighting ``kind``.

    Both papers define a weight on the squared error of one parametrization; the weight is
    converted so that the weighted loss is the *same function of the prediction* whatever the
    network's target. With x_t = a x0 + s eps, snr = a^2 / s^2, the squared errors relate as

        |eps err|^2 = snr |x0 err|^2 = snr / (1 + snr) |v err|^2,

    so a weight w_eps on the eps error is w_eps * snr on the x0 error and w_eps * snr / (1 + snr)
    on the v error (exact for ``mse``; other losses get the same factors).

    - ``p2`` (Choi et al. 2022, eq. 8): w_eps = 1 / (k + snr)^gamma relative to L_simple's eps loss.
    - ``min_snr`` (Hang et al. 2023): w_x0 = min(snr, gamma), i.e. w_eps = min(snr, gamma) / snr and
      w_v = min(snr, gamma) / (snr + 1).
    - ``none``: 1 for every target (plain regression of the target).
    """
    if kind == "none":
        return torch.ones_like(snr)
    if kind == "p2":
        w_eps = (p2_k + snr) ** (-p2_gamma)
    elif kind == "min_snr":
        w_eps = snr.clamp(max=snr_gamma) / snr
    else:
        raise ValueError(f"unknown loss weighting {kind!r}; choose one of {', '.join(WEIGHTINGS)}")
    check_target(target)
    factor = {"eps": torch.ones_like(snr), "x0": snr, "v": snr / (1.0 + snr)}[target]
    return w_eps * factor


@dataclass
class Objective:
    """Per-sample training losses: L_simple (optionally SNR-weighted), L_hybrid or L_vlb.

    Args:
        schedule: the forward process.
        target: what the network regresses: eps, x0 or v.
        loss: the L_simple regression loss: mse, l1, huber, smooth_l1.
        learn_sigma: the network outputs 2C channels, the second C the variance interpolation v
            (log var = frac log beta_t + (1 - frac) log beta~_t, frac = (v + 1) / 2); trained by
            the VLB term (L_hybrid, or L_vlb with ``use_kl``).
        use_kl: train on the VLB alone (T L_t per sample; L_simple and its weighting are unused).
        rescale_learned_sigmas: scale the hybrid VLB term by T / 1000 (lambda = 0.001).
        weighting: SNR weighting of L_simple: none, p2 or min_snr (:func:`snr_loss_weight`).
        p2_gamma, p2_k: P2 weighting's gamma and k.
        snr_gamma: Min-SNR's gamma.
    """

    schedule: Schedule
    target: str = "eps"
    loss: str = "mse"
    learn_sigma: bool = False
    use_kl: bool = False
    rescale_learned_sigmas: bool = True
    weighting: str = "none"
    p2_gamma: float = 1.0
    p2_k: float = 1.0
    snr_gamma: float = 5.0

    def __post_init__(self):
        check_target(self.target)
        elementwise_loss(self.loss, torch.zeros(1), torch.zeros(1))  # validates the name
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")

    @classmethod
    def from_config(cls, schedule: Schedule, diffusion, learn_sigma: bool = False) -> "Objective":
        """The objective described by a :class:`~difforge.config.DiffusionConfig` (read by field name)."""
        names = ("target", "loss", "use_kl", "rescale_learned_sigmas", "p2_gamma", "p2_k", "snr_gamma")
        kw = {n: getattr(diffusion, n) for n in names if hasattr(diffusion, n)}
        if hasattr(diffusion, "loss_weighting"):
            kw["weighting"] = diffusion.loss_weighting
        return cls(schedule, learn_sigma=learn_sigma, **kw)

    @property
    def vb_scale(self) -> float:
        """Factor on the per-t VLB term: T (use_kl), T / 1000 (rescaled hybrid) or 1."""
        T = self.schedule.num_steps
        if self.use_kl:
            return float(T)
        return T / 1000.0 if self.rescale_learned_sigmas else 1.0

    def simple_weight(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) SNR weights of L_simple at timesteps ``t`` (ones without weighting)."""
        snr = self.schedule.snr().to(t.device)[t.long()]
        w = snr_loss_weight(self.weighting, snr, self.target, p2_gamma=self.p2_gamma, p2_k=self.p2_k, snr_gamma=self.snr_gamma)
        return w.float()

    def vb_term(self, pred: torch.Tensor, v: Optional[torch.Tensor], x0, x_t, t) -> torch.Tensor:
        """(B,) bits/dim of L_t for the network output ``pred`` (of ``target``) and variance channels ``v``."""
        a, s = extract_vp_coefs(self.schedule, t, x0.ndim, torch.float32)
        _, x0_pred = to_eps_x0(self.target, pred, x_t, a, s)
        mean, _, _ = q_posterior(self.schedule, x0_pred, x_t, t)
        log_var = extract_log_variance(self.schedule, t, x0.ndim, None if v is None else (v + 1.0) / 2.0)
        return vlb_terms_bits(self.schedule, x0, x_t, t, mean, log_var)

    def __call__(self, net: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, y=None,
                 weight: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Per-sample loss terms for a batch; ``terms['loss']`` is what the trainer minimises.
        ``weight``: per-pixel weights of L_simple, broadcast to the prediction (e.g. (B, 1, H, W),
        train/loss_masks.py); the logged regression term stays the unweighted mean, comparable across runs."""
        x_t = q_sample(self.schedule, x0, t, noise)
        out = net(x_t, t, y).float()
        c = x0.shape[1]
        want = 2 * c if self.learn_sigma else c
        if out.shape[1] != want:
            raise ValueError(
                f"the network has {out.shape[1]} output channels, the objective needs {want} "
                f"(learn_sigma={self.learn_sigma}, {c} image channels)"
            )
        pred, v = (out[:, :c], out[:, c:]) if self.learn_sigma else (out, None)
        x_t = x_t.float()
        if self.use_kl:
            vb = self.vb_term(pred, v, x0.float(), x_t, t)
            return {"loss": vb * self.vb_scale, "vb": vb.detach()}
        a, s = extract_vp_coefs(self.schedule, t, x0.ndim, torch.float32)
        target = training_target(self.target, x0.float(), noise.float(), a, s)
        elementwise = elementwise_loss(self.loss, pred, target)
        per_sample = mean_flat(elementwise)
        terms = {self.loss: per_sample.detach()}
        if weight is not None:
            per_sample = mean_flat(elementwise * weight)
        loss = per_sample if self.weighting == "none" else per_sample * self.simple_weight(t)
        if self.learn_sigma:
            vb = self.vb_term(pred.detach(), v, x0.float(), x_t, t)  # trains the variance only
            terms["vb"] = vb.detach()
            loss = loss + self.vb_scale * vb
        terms["loss"] = loss
        return terms
