"""Samplers: one small module per family, each a plain function registered by name.

Contract (see ``shared/DESIGN.md``)::

    sampler(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None, **opts) -> x_0

- ``denoiser(x_t, t, y) -> Prediction(eps, x0, var_frac)``; guidance and clipping live there.
- ``timesteps``: the kept original timestep indices, descending (e.g. ``[999, 949, ..., 0]``);
  respacing is just a shorter list.
- ``generator``: None, one ``torch.Generator`` or a list with one per sample (per-image seeds,
  so an image does not depend on the batch it was drawn in).
- ``callback(step, x_t, x0_pred)`` after every step (progress bars, trajectories, the web page).

Each sampler declares at registration the timestep spacing it works best with and how a
classifier should guide it, so no caller keeps a table of sampler names:
:func:`~difforge.diffusion.timesteps.default_spacing` and
:func:`~difforge.diffusion.guidance.guidance_mode` read them from here.

Adding a sampler is adding one module that calls :func:`register` and one test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

SAMPLERS: Dict[str, Callable] = {}


@dataclass(frozen=True)
class SamplerSpec:
    """What a sampler declares about itself.

    ``spacing``: its default timestep spacing, one of ``timesteps.SPACINGS`` (``uniform`` for
    steps built for even steps in t, ``logsnr`` for exponential integrators, ``karras`` for EDM).
    ``guidance``: how classifier guidance reaches it, one of ``guidance.MODES``: ``eps`` (score
    form, folded into the prediction) or ``mean`` (an ancestral sampler reading ``mean_grad``).
    """

    spacing: str = "uniform"
    guidance: str = "eps"


SPECS: Dict[str, SamplerSpec] = {}


def register(name: str, spacing: str = "uniform", guidance: str = "eps"):
    """Decorator: make ``fn`` selectable as ``--sampler name``, with its default spacing and guidance mode."""

    def deco(fn: Callable) -> Callable:
        SAMPLERS[name] = fn
        SPECS[name] = SamplerSpec(spacing=spacing, guidance=guidance)
        return fn

    return deco


def sampler_spec(name: str) -> Optional[SamplerSpec]:
    """The :class:`SamplerSpec` of a registered sampler, or None for an unknown name."""
    _load_all()
    return SPECS.get(name)


def get_sampler(name: str) -> Callable:
    _load_all()
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}") from None


def available() -> list:
    _load_all()
    return sorted(SAMPLERS)


def _load_all() -> None:
    """Import every sampler module so its @register runs."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name != "common":
            importlib.import_module(f"{__name__}.{mod.name}")
