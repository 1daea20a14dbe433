"""Guidance as denoiser wrappers: a noisy classifier's gradient, or a second model (unconditional, or weaker).

Both wrappers have a :class:`~difforge.diffusion.denoiser.Denoiser`'s call signature and return a
:class:`~difforge.diffusion.denoiser.Prediction`, so they compose with every sampler (and with
each other) and no sampler holds guidance code. Built-in classifier-free guidance of a
conditional network (one batched forward with the null class) stays in the Denoiser itself.

Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", sec. 4): sample from
p(x_t) p(y | x_t)^s with a classifier trained on noisy x_t. With g = grad_x log p(y | x_t):

- score form (Alg. 2, any sampler): the score of the tilted density is grad log p(x_t) + s g, and
  since eps = -sqrt(1 - ab_t) grad log p(x_t),  eps' = eps - s sqrt(1 - ab_t) g,  x0' from eps'.
- mean form (Alg. 1, ancestral DDPM): the reverse-step mean moves by s Sigma_t g, with Sigma_t the
  variance of the step the sampler takes; carried as ``Prediction.mean_grad`` = s g, which the
  ddpm sampler adds as var * mean_grad (the one generic hook of the sampler contract).

The two agree to first order in beta_t but not exactly: the score form moves the DDPM mean by
beta'_t / sqrt(1 - beta'_t) s g instead of Sigma_t s g (for fixed_small, Sigma_t = beta~_t is
much smaller than beta_t near t = 0). guided-diffusion uses the mean form for DDPM and the score
form for DDIM; :func:`guidance_mode` makes the same choice.

Classifier-free guidance from two models (Ho & Salimans 2021, eq. 6, in the seed's form):
eps = (1 + w) eps(x_t, y) - w eps(x_t), applied to the raw predictions before x0 clipping.
Built-in CFG writes eps_u + s (eps_c - eps_u), so s = 1 + w: w = 0 is the conditional model
alone, the same as built-in s = 1.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from ..errors import UserError
from .denoiser import Prediction, constrain_x0, in_cfg_interval, x0_from_eps
from .samplers import sampler_spec
from .schedule import Schedule, vp_coefs_at

MODES = ("eps", "mean")


def guidance_mode(sampler: str) -> str:
    """How a classifier should guide ``sampler``: as it declares at registration (ddpm: ``mean``, Alg. 1).

    ``eps`` (Alg. 2) for every other sampler, and for a name that is not registered.
    """
    spec = sampler_spec(sampler)
    return "eps" if spec is None else spec.guidance


def class_log_prob_grad(classifier: Callable, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                        autocast: Callable = contextlib.nullcontext) -> torch.Tensor:
    """grad_x log softmax(classifier(x_t, t))[y], per sample, in x_t's dtype.

    Runs with autograd even when called inside ``torch.inference_mode`` (where samplers run): on
    detached clones of x_t and t, so nothing of the sampler's state is recorded. Samples do not
    interact (the classifier has no batch statistics), so one backward of the summed log
    probabilities gives every sample's own gradient. ``t`` may be fractional: it goes straight
    into the classifier's continuous sinusoidal time embedding (no rounding).
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = x_t.detach().clone().requires_grad_(True)
        tt = torch.as_tensor(t, device=x_t.device).detach().clone()
        if tt.ndim == 0:
            tt = tt.expand(x.shape[0])
        with autocast():
            logits = classifier(x, tt)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(1, y.detach().clone().long().reshape(-1, 1).to(logp.device)).sum()
        (grad,) = torch.autograd.grad(picked, x)
    return grad.to(x_t.dtype)


def same_schedule(a: Schedule, b: Schedule) -> bool:
    """Whether two schedules have the same T and alphas_cumprod (to float rounding)."""
    return a.num_steps == b.num_steps and torch.allclose(a.alphas_cumprod, b.alphas_cumprod, rtol=1e-6, atol=1e-9)


class ClassifierGuided:
    """``base`` denoiser guided toward class y by a noisy classifier: p(x_t) p(y | x_t)^scale.

    Args:
        base: any denoiser ``(x_t, t, y) -> Prediction`` (it also receives y: a conditional base
            model stays conditional, as in guided-diffusion).
        classifier: ``classifier(x_t, t) -> logits (B, K)``, trained on x_t of the same schedule.
        scale: s; 0 returns the base prediction unchanged (no classifier call).
        mode: ``eps`` (score form, every sampler) or ``mean`` (ancestral mean shift, for ddpm;
            other samplers ignore ``mean_grad``, so do not give them this mode).
        schedule: the diffusion schedule (default: ``base.schedule``).
        clip_x0, threshold: how the shifted x0 is clipped (default: as the base denoiser does),
            so samplers keep seeing x0 in range. guided-diffusion leaves the shifted x0 unclipped;
            with clipping the shift is lost only where x0 already saturates.
        autocast: context-manager factory around the classifier call (the gradient stays fp32).
    """

    def __init__(self, base: Callable, classifier: Callable, scale: float, *, mode: str = "eps",
                 schedule: Optional[Schedule] = None, clip_x0: Optional[bool] = None,
                 threshold: Optional[float] = None, autocast: Callable = contextlib.nullcontext):
        if mode not in MODES:
            raise ValueError(f"classifier guidance mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.base = base
        self.classifier = classifier
        self.scale = float(scale)
        self.mode = mode
        self.schedule = schedule if schedule is not None else base.schedule
        self.clip_x0 = bool(getattr(base, "clip_x0", False)) if clip_x0 is None else clip_x0
        self.threshold = getattr(base, "threshold", None) if threshold is None else threshold
        self.autocast = autocast

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> Prediction:
        pred = self.base(x_t, t, y)
        if self.scale == 0.0:
            return pred
        if y is None:
            raise UserError("classifier guidance needs a class for every image: give a class, 'all', or leave it to pick classes in turn")
        grad = self.scale * class_log_prob_grad(self.classifier, x_t, t, y, self.autocast)
        if self.mode == "mean":
            shift = grad if pred.mean_grad is None else pred.mean_grad + grad
            return Prediction(eps=pred.eps, x0=pred.x0, var_frac=pred.var_frac, mean_grad=shift)
        a, s = vp_coefs_at(self.schedule, t, x_t)
        eps = pred.eps - s * grad
        eps, x0 = constrain_x0(eps, x0_from_eps(x_t, eps, a, s), x_t, a, s, clip_x0=self.clip_x0, threshold=self.threshold)
        return Prediction(eps=eps, x0=x0, var_frac=pred.var_frac, mean_grad=pred.mean_grad)


class TwoModelCFG:
    """Classifier-free guidance from a conditional and an unconditional model, weight w.

    eps = (1 + w) eps_c(x_t, y) - w eps_u(x_t), on the raw (unclipped) predictions; then x0 from
    eps, the conditional denoiser's guidance rescale (Lin et al. 2024, against x0_c) and its
    clipping / thresholding, as built-in CFG does. The variance (learned-sigma models) is the
    conditional model's. Equivalent to built-in CFG with scale s = 1 + w when the two models are
    one network with and without its null class.

    ``cond`` / ``uncond``: denoisers; a :class:`Denoiser` is used without its own clipping and
    with its built-in CFG off (scale 1). Both must share the schedule.

    ``cfg_interval`` (sigma_lo, sigma_hi) (default: the conditional denoiser's): guidance only
    where sigma(t) is in (lo, hi] (Kynkaenniemi et al. 2024); at the other steps the unconditional
    model is not called and the result is the conditional model's (w = 0).

    ``guide_labels``: the second model also gets y. That is autoguidance (Karras et al. 2024,
    "Guiding a Diffusion Model with a Bad Version of Itself"): the second model is a weaker
    version of the first (trained shorter, or smaller) with the same conditioning, so the
    difference points away from the errors the weak model makes more of, not toward the class;
    it needs no unconditional branch and so also guides an unconditional model.
    """

    def __init__(self, cond: Callable, uncond: Callable, w: float, *, clip_x0: Optional[bool] = None,
                 threshold: Optional[float] = None, cfg_rescale: Optional[float] = None,
                 cfg_interval: Optional[tuple] = None, guide_labels: bool = False):
        self.schedule = cond.schedule
        self.guide_labels = bool(guide_labels)
        if hasattr(uncond, "schedule") and not same_schedule(cond.schedule, uncond.schedule):
            raise UserError(
                f"the conditional and the unconditional model have different noise schedules "
                f"(T={cond.schedule.num_steps} vs T={uncond.schedule.num_steps} or other betas); two-model guidance needs the same one"
            )
        self.w = float(w)
        self.clip_x0 = bool(getattr(cond, "clip_x0", False)) if clip_x0 is None else clip_x0
        self.threshold = getattr(cond, "threshold", None) if threshold is None else threshold
        self.cfg_rescale = float(getattr(cond, "cfg_rescale", 0.0) if cfg_rescale is None else cfg_rescale)
        self.cfg_interval = getattr(cond, "cfg_interval", None) if cfg_interval is None else cfg_interval
        self.cond = self._raw(cond, cfg_scale=1.0)
        self.uncond = self._raw(uncond)

    @staticmethod
    def _raw(d: Callable, **extra) -> Callable:
        """The denoiser without x0 clipping, thresholding or rescale (and with ``extra`` options)."""
        if hasattr(d, "with_options"):
            return d.with_options(clip_x0=False, threshold=None, cfg_rescale=0.0, **extra)
        return d

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> Prediction:
        pc = self.cond(x_t, t, y)
        a, s = vp_coefs_at(self.schedule, t, x_t)
        tt = torch.as_tensor(t, device=x_t.device)
        inside = in_cfg_interval(self.schedule, tt.expand(x_t.shape[0]) if tt.ndim == 0 else tt, self.cfg_interval)
        if self.w == 0.0 or not bool(inside.any()):
            eps = pc.eps
        elif bool(inside.all()):
            eps = (1.0 + self.w) * pc.eps - self.w * self.uncond(x_t, t, y if self.guide_labels else None).eps
        else:  # mixed timesteps: the second model sees only the samples inside
            eps = pc.eps.clone()
            tin = tt if tt.ndim == 0 else tt[inside]
            yin = y[inside] if self.guide_labels and y is not None else None
            eps[inside] = (1.0 + self.w) * pc.eps[inside] - self.w * self.uncond(x_t[inside], tin, yin).eps
        eps, x0 = constrain_x0(eps, x0_from_eps(x_t, eps, a, s), x_t, a, s, clip_x0=self.clip_x0,
                               threshold=self.threshold, rescale=self.cfg_rescale, x0_ref=pc.x0)
        return Prediction(eps=eps, x0=x0, var_frac=pc.var_frac)


__all__ = ["ClassifierGuided", "MODES", "TwoModelCFG", "class_log_prob_grad", "guidance_mode", "same_schedule"]
