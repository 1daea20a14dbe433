"""Guidance that needs a second file: a noisy classifier, an unconditional model for two-model CFG,
or a weaker version of the model for autoguidance.

:meth:`difforge.pipeline.Pipeline.with_guidance` loads and checks the files here and gets back a
:class:`Guide`, which wraps the pipeline's denoiser (:mod:`difforge.diffusion.guidance`) for
each request, in the mode its sampler declares (mean shift for ddpm, eps shift otherwise):

- ``classifier`` (a ``difforge train-classifier`` file, or an ``(net, meta)`` pair already
  loaded) with ``classifier_scale`` s: sample p(x_t) p(y | x_t)^s. It must have been trained on
  the model's schedule (same T and alphas_cumprod), image size and channels, and have the model's
  classes when the model is conditional; an unconditional model takes the classifier's classes.
- ``uncond_model`` (a model file, or a loaded Pipeline): eps = (1 + w) eps_c - w eps_u with w the
  request's ``cfg``. The main model must be conditional and this one unconditional, with the
  same schedule and image shape. Built-in CFG's scale s is 1 + w.

- ``guide_model`` (a model file, or a loaded Pipeline): autoguidance (Karras et al. 2024):
  eps = (1 + w) eps_good(x_t, y) - w eps_weak(x_t, y), with w the request's ``cfg`` and the weak
  model a shorter-trained or smaller model of the same data, classes and schedule. It needs no
  unconditional branch, so it also guides unconditional models (a flat folder).

Two-model CFG or autoguidance (not both) may be combined with classifier guidance on top. Every mismatch is one
:class:`~difforge.errors.UserError` line naming both files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from ..diffusion.guidance import ClassifierGuided, TwoModelCFG, same_schedule
from ..diffusion.schedule import Schedule, schedule_name
from ..errors import UserError


def load_classifier(path, device: torch.device) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """A noisy classifier file -> (network in eval mode without gradients on ``device``, its metadata)."""
    from ..modelfile import build_network, check_meta, load_model_file

    tensors, meta = load_model_file(path)
    if meta.get("kind") != "classifier":
        raise UserError(f"{path} is a {str(meta.get('kind', 'diffusion'))[:40]} model file, not a noisy classifier; train one with `difforge train-classifier`")
    net = build_network(check_meta(meta, path), tensors, path)
    return net.to(device).eval().requires_grad_(False), meta


@dataclass
class Guide:
    """What a guided request adds to the plain denoiser; see the module docstring."""

    classifier: Optional[torch.nn.Module] = None
    classifier_scale: float = 1.0
    uncond: Any = None  # a Pipeline
    autocast: Callable = None
    weak: Any = None  # a Pipeline (autoguidance)

    @property
    def second_model(self) -> Optional[str]:
        """``"uncond"`` or ``"weak"`` when ``cfg`` is w of a second model's guidance, None for built-in CFG's s."""
        return "uncond" if self.uncond is not None else ("weak" if self.weak is not None else None)

    def wrap(self, den, cfg: float, mode: str = "eps"):
        """The pipeline's denoiser ``den`` with this guidance; ``cfg`` is w when an unconditional
        model is given; ``mode`` is how the request's sampler takes classifier guidance."""
        if self.uncond is not None:
            u = self.uncond.denoiser(cfg=1.0, clip_x0=den.clip_x0, threshold=den.threshold)
            den = TwoModelCFG(den, u, cfg)
        if self.weak is not None:
            weak = self.weak.denoiser(cfg=1.0, clip_x0=den.clip_x0, threshold=den.threshold)
            den = TwoModelCFG(den, weak, cfg, guide_labels=True)
        if self.classifier is not None:
            den = ClassifierGuided(den, self.classifier, self.classifier_scale, mode=mode, autocast=self.autocast)
        return den


def make_guide(pipe, classifier=None, classifier_scale: float = 1.0, uncond_model=None, guide_model=None) -> Tuple[Guide, list]:
    """Load and check the files of a guided request on ``pipe``: (the Guide, the request's class names)."""
    from ..runtime import autocast_factory

    name = pipe.source or "the model"
    class_names = list(pipe.class_names)
    guide = Guide(autocast=autocast_factory(pipe.precision, pipe.device))
    if uncond_model is not None and guide_model is not None:
        raise UserError("give --uncond-model (two-model CFG) or --guide-model (autoguidance), not both")
    if uncond_model is not None:
        guide.uncond = _uncond_pipeline(pipe, uncond_model, name)
    if guide_model is not None:
        guide.weak = _weak_pipeline(pipe, guide_model, name)
    if classifier is not None:
        if pipe.codec is not None:
            raise UserError(f"{name} is a latent model; a noisy classifier guides pixel-space models only")
        scale = float(classifier_scale)
        if scale != scale or scale in (float("inf"), float("-inf")):
            raise UserError(f"classifier_scale (--classifier-scale) must be a finite number, got {classifier_scale}")
        if isinstance(classifier, tuple):
            net, meta, cname = classifier[0], classifier[1], "the classifier"
        else:
            net, meta = load_classifier(classifier, pipe.device)
            cname = str(classifier)
        _check_classifier(pipe, meta, name, cname)
        guide.classifier, guide.classifier_scale = net, scale
        class_names = class_names or list(meta["data"]["class_names"])
    return guide, class_names


def _check_classifier(pipe, meta, name: str, cname: str) -> None:
    d, data = meta["diffusion"], meta["data"]
    sched = Schedule.from_settings(d)
    if not same_schedule(sched, pipe.schedule):
        md = pipe.meta["diffusion"]
        raise UserError(
            f"{cname} was trained on the {schedule_name(d)} with T={d['diffusion_steps']} but {name} uses the "
            f"{schedule_name(md)} with T={md['diffusion_steps']}; train the classifier with --noise-schedule "
            f"{md['noise_schedule']} --diffusion-steps {md['diffusion_steps']} --noise-shift {float(md.get('noise_shift', 1.0)):g}"
        )
    if (int(data["image_size"]), int(data["channels"])) != (pipe.image_size, pipe.channels):
        raise UserError(
            f"{cname} classifies {data['image_size']}px images with {data['channels']} channel(s) but {name} makes "
            f"{pipe.image_size}px with {pipe.channels}; train the classifier with --image-size {pipe.image_size} --channels {pipe.channels}"
        )
    if pipe.class_names and list(data["class_names"]) != list(pipe.class_names):
        raise UserError(
            f"{cname} has classes {', '.join(data['class_names'])} but {name} has {', '.join(pipe.class_names)}; "
            "they must be the same classes in the same order"
        )


def _second_pipeline(pipe, model, fallback: str):
    """(A second model's Pipeline, its name in messages): a loaded one, or a file loaded like ``pipe``
    (same device and precision)."""
    p = model if isinstance(model, type(pipe)) else type(pipe).from_checkpoint(model, device=str(pipe.device), precision=pipe.precision)
    return p, p.source or fallback


def _same_process(pipe, other, name: str, oname: str, guidance: str) -> None:
    """One line unless ``other`` has ``pipe``'s noise schedule and sample shape (and VAE)."""
    if not same_schedule(other.schedule, pipe.schedule):
        raise UserError(f"{oname} and {name} have different noise schedules (T={other.schedule.num_steps} vs {pipe.schedule.num_steps} or other betas); {guidance} needs the same one")
    if other.sample_shape != pipe.sample_shape or other.meta.get("latent") != pipe.meta.get("latent"):
        raise UserError(f"{oname} makes {other.sample_shape} samples and {name} {pipe.sample_shape} (or another VAE); the two models must match")


def _uncond_pipeline(pipe, uncond_model, name: str):
    u, uname = _second_pipeline(pipe, uncond_model, "the unconditional model")
    if not pipe.class_names:
        raise UserError(f"two-model guidance (--uncond-model) needs a class-conditional main model; {name} is unconditional")
    if u.class_names:
        raise UserError(f"{uname} is class-conditional ({', '.join(u.class_names)}); --uncond-model takes an unconditional model")
    _same_process(pipe, u, name, uname, "two-model guidance")
    return u


def _weak_pipeline(pipe, guide_model, name: str):
    # the weak model of autoguidance: the same classes, schedule and sample shape as ``pipe``
    w, wname = _second_pipeline(pipe, guide_model, "the guide model")
    if pipe.meta.get("text") or w.meta.get("text"):
        raise UserError(f"autoguidance (--guide-model) works with class-conditional and unconditional models; {name if pipe.meta.get('text') else wname} is a text model")
    if list(w.class_names) != list(pipe.class_names):
        have = lambda p: ", ".join(p.class_names) or "no classes (unconditional)"  # noqa: E731
        raise UserError(f"{wname} has {have(w)} but {name} has {have(pipe)}; autoguidance needs a weaker model of the same classes")
    _same_process(pipe, w, name, wname, "autoguidance")
    return w


__all__ = ["Guide", "load_classifier", "make_guide"]
