"""Samplers: one small module per family, each a plain function registered by name.

Contract (see ``shared/DESIGN.md``)::

    sampler(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None, **opts) -> x_0

- ``denoiser(x_t, t, y) -> Prediction(eps, x0, var_frac)``; guidance and clipping live there.
- ``timesteps``: the kept original timestep indices, descending (e.g. ``[999, 949, ..., 0]``);
  respacing is just a shorter list.
- ``generator``: None, one ``torch.Generator`` or a list with one per sample (per-image seeds,
  so an image does not depend on the batch it was drawn in).
- ``callback(step, x_t, x0_pred)`` after every step (progress bars, trajectories, the web page).

Adding a sampler is adding one module that calls :func:`register` and one test.
"""

from __future__ import annotations

from typing import Callable, Dict

SAMPLERS: Dict[str, Callable] = {}


def register(name: str):
    """Decorator: make ``fn`` selectable as ``--sampler name``."""

    def deco(fn: Callable) -> Callable:
        SAMPLERS[name] = fn
        return fn

    return deco


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
