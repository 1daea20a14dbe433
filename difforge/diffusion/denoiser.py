"""Denoiser: a network plus its parametrization and guidance, seen by samplers as (eps, x0, var).

Samplers talk only to a denoiser, never to a network, so a sampler is independent of the
prediction target (eps / x0 / v), of classifier-free guidance and of x0 clipping. Guidance of
other kinds (a classifier, a second unconditional model) wraps a denoiser and returns the same
:class:`Prediction`.

This is also the one place where eps, x0 and v are converted into each other. With
a = sqrt(ab_t) and s = sqrt(1 - ab_t) (so a^2 + s^2 = 1; :func:`~difforge.diffusion.schedule.vp_coefs`)
and x_t = a x0 + s eps:

    eps = (x_t - a x0) / s,   x0 = (x_t - s eps) / a,   v = a eps - s x0  (Salimans & Ho 2022),
    x0 = a x_t - s v,         eps = s x_t + a v.

Samplers that work in the variance-exploding view (EDM, DPM-Solver++, UniPC) ask
:func:`x0_at_sigma`; x0 clipping, dynamic thresholding and CFG rescale are :func:`constrain_x0`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .schedule import Schedule, alpha_bar_at, sigma_of, to_vp, vp_coefs_at  # noqa: F401  (alpha_bar_at: old home)

TARGETS = ("eps", "x0", "v")


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown prediction target {target!r}; choose one of {', '.join(TARGETS)}")
    return target


def training_target(target: str, x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """What the network is trained to output for ``target``."""
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    if target == "v":
        return a * eps - s * x0
    raise ValueError(check_target(target))


def to_eps_x0(target: str, pred: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor):
    """Turn a network output of kind ``target`` into the pair (eps, x0)."""
    if target == "eps":
        return pred, x0_from_eps(x_t, pred, a, s)
    if target == "x0":
        return eps_from_x0(pred, x_t, a, s), pred
    if target == "v":
        return s * x_t + a * pred, a * x_t - s * pred
    raise ValueError(check_target(target))


def eps_from_x0(x0: torch.Tensor, x_t: torch.Tensor, a, s) -> torch.Tensor:
    """eps consistent with x_t and a (possibly clipped) x0."""
    return (x_t - a * x0) / s


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, a, s) -> torch.Tensor:
    """x0 consistent with x_t and eps (``a``, ``s`` tensors or Python floats)."""
    return (x_t - s * eps) / a


@dataclass
class Prediction:
    """What a denoiser tells a sampler about x_0 given x_t.

    ``var_frac`` is the learned-variance interpolation weight v in [0, 1] of improved DDPM
    (log var = v log beta_t + (1 - v) log beta~_t), or None when the network predicts no variance.

    ``mean_grad`` is an optional gradient g = grad_x log f(x_t) of an extra factor f of the density
    to sample (classifier guidance: f = p(y | x_t)^s). An ancestral (DDPM) sampler adds
    Sigma_t g to its reverse-step mean, Sigma_t being the variance of the step it takes
    (Sohl-Dickstein et al. 2015; Dhariwal & Nichol 2021, Alg. 1); ``eps`` / ``x0`` then carry no
    such guidance. A denoiser sets it only for samplers that read it (ddpm): the others get the
    guidance folded into ``eps`` instead (:mod:`difforge.diffusion.guidance`).
    """

    eps: torch.Tensor
    x0: torch.Tensor
    var_frac: Optional[torch.Tensor] = None
    mean_grad: Optional[torch.Tensor] = None


def in_cfg_interval(schedule: Schedule, t: torch.Tensor, interval: Optional[tuple]) -> torch.Tensor:
    """(B,) bool: whether guidance applies at each timestep t (Kynkaenniemi et al. 2024, eq. 4).

    Guidance is on where the VE noise level sigma(t) = sqrt((1 - ab_t) / ab_t) lies in the
    half-open interval (sigma_lo, sigma_hi], and off (the conditional prediction alone) at the
    highest and lowest noise levels; ``interval`` None is everywhere. sigma, not t, so one
    interval means the same for every schedule and T (the paper's EDM2 values: (0.28, 5.42]).
    """
    t = torch.as_tensor(t)
    if interval is None:
        return torch.ones(t.shape, dtype=torch.bool, device=t.device)
    lo, hi = interval
    sigma = sigma_of(alpha_bar_at(schedule, t))
    return (sigma > lo) & (sigma <= hi)


def x0_at_sigma(denoiser: Callable, x: torch.Tensor, t: torch.Tensor, sigma: float, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The VE view of any denoiser: D(x; sigma) = x0 predicted from x_t = x / sqrt(1 + sigma^2).

    ``x`` is the variance-exploding point x_t / sqrt(ab_t) = x0 + sigma eps, ``t`` the (B,) timestep
    whose sigma is ``sigma`` (Karras et al. 2022). Works for wrapped denoisers too (it only calls them).
    """
    return denoiser(to_vp(x, sigma), t, y).x0


def dynamic_threshold(x0: torch.Tensor, percentile: float) -> torch.Tensor:
    """Imagen's dynamic thresholding: clip to the per-sample ``percentile`` of |x0| (at least 1), rescale."""
    flat = x0.detach().abs().flatten(1).float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-s, s) / s


def constrain_x0(eps: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, a, s, *, clip_x0: bool,
                 threshold: Optional[float] = None, rescale: float = 0.0, x0_ref: Optional[torch.Tensor] = None):
    """(eps, x0) after guidance rescale, then dynamic thresholding or clipping; eps kept consistent.

    - ``rescale`` phi with ``x0_ref`` (the conditional x0; Lin et al. 2024, "Common Diffusion Noise
      Schedules and Sample Steps are Flawed", sec. 3.4): x0 <- phi x0 std(x0_ref) / std(x0) + (1 - phi) x0,
      undoing the over-exposure strong CFG causes.
    - ``threshold``: :func:`dynamic_threshold` at that percentile (Imagen), instead of clipping.
    - ``clip_x0``: clamp x0 to [-1, 1] (Ho et al. 2020's sampling clip).
    """
    if x0_ref is not None and rescale > 0:
        dims = tuple(range(1, x0.ndim))
        ratio = x0_ref.std(dim=dims, keepdim=True) / x0.std(dim=dims, keepdim=True).clamp(min=1e-8)
        x0 = rescale * (x0 * ratio) + (1.0 - rescale) * x0
        eps = eps_from_x0(x0, x_t, a, s)
    if threshold is not None:
        x0 = dynamic_threshold(x0, threshold)
        return eps_from_x0(x0, x_t, a, s), x0
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        return eps_from_x0(x0, x_t, a, s), x0
    return eps, x0


class Denoiser:
    """Wrap ``net(x, t, y) -> out`` into ``denoiser(x_t, t, y) -> Prediction``.

    Args:
        net: the network; its output has C channels, or 2C when ``learn_sigma``.
        schedule: the training schedule the network was trained with.
        target: what the network predicts: ``eps``, ``x0`` or ``v``.
        learn_sigma: the network's second C channels carry the variance interpolation.
        num_classes: number of classes of a conditional network (index ``num_classes`` = null).
        cfg_scale: classifier-free guidance s: out = uncond + s (cond - uncond); 1 = plain
            conditional, 0 = unconditional. Cond and uncond run as one batched forward.
        cfg_rescale: guidance rescale phi of Lin et al. 2024 (0 = off).
        cfg_interval: (sigma_lo, sigma_hi): guidance only where sigma(t) is in (lo, hi]
            (:func:`in_cfg_interval`); elsewhere only the conditional forward runs (batch B, not
            2B). None = guidance at every step.
        clip_x0: clamp predicted x0 to [-1, 1] (then eps is made consistent with it).
        threshold: dynamic-thresholding percentile (e.g. 0.995), applied instead of plain clipping.
        autocast: a context-manager factory used around the network call (mixed precision).
    """

    def __init__(
        self,
        net: Callable,
        schedule: Schedule,
        *,
        target: str = "eps",
        learn_sigma: bool = False,
        num_classes: int = 0,
        cfg_scale: float = 1.0,
        cfg_rescale: float = 0.0,
        cfg_interval: Optional[tuple] = None,
        clip_x0: bool = True,
        threshold: Optional[float] = None,
        autocast: Callable = contextlib.nullcontext,
    ):
        self.net = net
        self.schedule = schedule
        self.target = check_target(target)
        self.learn_sigma = learn_sigma
        self.num_classes = num_classes
        self.cfg_scale = float(cfg_scale)
        self.cfg_rescale = float(cfg_rescale)
        self.cfg_interval = None if cfg_interval is None else (float(cfg_interval[0]), float(cfg_interval[1]))
        self.clip_x0 = clip_x0
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"dynamic threshold percentile must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.autocast = autocast

    def with_options(self, **changes) -> "Denoiser":
        """A copy with some options changed (e.g. a different cfg_scale for one request)."""
        new = object.__new__(Denoiser)
        new.__dict__.update(self.__dict__)
        for k, v in changes.items():
            if k not in new.__dict__:
                raise TypeError(f"unknown denoiser option {k!r}")
            setattr(new, k, v)
        return new

    # -- the network call ------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        with self.autocast():
            out = self.net(x, t, y)
        return out.float()

    def raw(self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None):
        """Network output split into (prediction of ``target``, var_frac or None), guidance applied.

        Outside ``cfg_interval`` the unconditional half is not computed: a batch wholly outside
        runs one forward of batch B; a batch with mixed timesteps runs both halves for the
        samples inside only.
        """
        guided = self.num_classes > 0 and y is not None and self.cfg_scale != 1.0
        inside = None
        if guided and self.cfg_interval is not None:
            inside = in_cfg_interval(self.schedule, t, self.cfg_interval).to(x_t.device)
            if bool(inside.all()):
                inside = None
            elif not bool(inside.any()):
                guided = False
        if guided and inside is not None:  # mixed timesteps: guide the samples inside, the rest plain
            parts = [self._raw(x_t[m], t[m], y[m], g) for m, g in ((inside, True), (~inside, False))]
            pred = torch.empty((x_t.shape[0], *parts[0][0].shape[1:]), dtype=parts[0][0].dtype, device=x_t.device)
            ref, var_frac = pred.clone(), None
            pred[inside], pred[~inside] = parts[0][0], parts[1][0]
            ref[inside], ref[~inside] = parts[0][2], parts[1][0]
            if parts[0][1] is not None:
                var_frac = torch.empty_like(pred)
                var_frac[inside], var_frac[~inside] = parts[0][1], parts[1][1]
            return pred, var_frac, ref
        return self._raw(x_t, t, y, guided)

    def _raw(self, x_t, t, y, guided: bool):
        if guided:
            null = torch.full_like(y, self.num_classes)
            out = self._forward(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]))
            cond, uncond = out.chunk(2)
        else:
            cond = self._forward(x_t, t, y if self.num_classes > 0 else None)
        c = x_t.shape[1]
        var_frac = None
        if self.learn_sigma:
            var_frac = (cond[:, c:].clamp(-1, 1) + 1.0) / 2.0
            cond = cond[:, :c]
            if guided:
                uncond = uncond[:, :c]
        if guided:
            return uncond + self.cfg_scale * (cond - uncond), var_frac, cond
        return cond, var_frac, None

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> Prediction:
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        a, s = vp_coefs_at(self.schedule, t, x_t)
        pred, var_frac, cond = self.raw(x_t, t, y)
        eps, x0 = to_eps_x0(self.target, pred, x_t, a, s)
        x0_cond = to_eps_x0(self.target, cond, x_t, a, s)[1] if cond is not None and self.cfg_rescale > 0 else None
        eps, x0 = constrain_x0(eps, x0, x_t, a, s, clip_x0=self.clip_x0, threshold=self.threshold,
                               rescale=self.cfg_rescale, x0_ref=x0_cond)
        return Prediction(eps=eps, x0=x0, var_frac=var_frac)


__all__ = [
    "Denoiser",
    "Prediction",
    "TARGETS",
    "alpha_bar_at",
    "check_target",
    "constrain_x0",
    "dynamic_threshold",
    "eps_from_x0",
    "in_cfg_interval",
    "to_eps_x0",
    "training_target",
    "x0_at_sigma",
    "x0_from_eps",
]
