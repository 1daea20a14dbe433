"""Every network by name: ``build(name, **config)`` makes it, ``available()`` lists the names.

A network registers its class (or a builder function) with ``@register("name")``; a preset is the
same class registered under another name with other defaults::

    register("unet-tiny", base_channels=32, channel_mult=[1, 2, 2])(UNet)

A built network carries ``net.arch`` (its canonical name) and ``net.config`` (every constructor
argument, JSON-serialisable), so ``build(net.arch, **net.config)`` rebuilds it exactly; that is
what a model file stores. Modules in this package are imported on first need, so a new network
file only has to call :func:`register`.

Every network has a *kind*: ``"network"`` (the ``net(x, t, y)`` contract: denoisers and noisy
classifiers, what :func:`available` lists by default) or ``"autoencoder"`` (the VAE of latent
diffusion: ``register("vae", kind="autoencoder")``). :func:`build` builds any kind.

:func:`fit_levels` sizes a network's default levels for a small input (a VAE's latent).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from torch import nn

from ..errors import ConfigError

_NOT_NETWORKS = {"registry", "layers", "info"}
MIN_LATENT_RES = 4  # default network levels stop halving at a 4x4 feature map


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    defaults: Dict[str, Any] = field(default_factory=dict)
    kind: str = "network"


_REGISTRY: Dict[str, _Entry] = {}


def register(name: str, *, kind: str = "network", **defaults: Any) -> Callable:
    """Decorator: make ``factory`` buildable as ``name``; ``defaults`` override its own defaults."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"network name {name!r} is already registered by {_REGISTRY[name].factory!r}")
        _REGISTRY[name] = _Entry(factory, dict(defaults), kind)
        return factory

    return deco


def available(kind: str = "network") -> List[str]:
    """The registered names of ``kind`` (default: the ``net(x, t, y)`` networks), sorted."""
    _load_all()
    return sorted(n for n, e in _REGISTRY.items() if e.kind == kind)


def kind_of(name: str) -> Optional[str]:
    """``"network"``, ``"autoencoder"``, ... of a registered name; None for an unknown name."""
    if name not in _REGISTRY:
        _load_all()
    entry = _REGISTRY.get(name)
    return entry.kind if entry is not None else None


def options(name: str) -> Dict[str, Any]:
    """The full default config of network ``name`` (preset defaults over constructor defaults)."""
    return _defaults(name)


def _defaults(name: str) -> Dict[str, Any]:
    entry = _entry(name)
    params = _params(entry.factory)
    out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(entry.defaults)
    return out


def build(name: str, **config: Any) -> nn.Module:
    """Build network ``name``; ``config`` overrides its defaults. Bad names or keys -> ConfigError."""
    entry = _entry(name)
    merged = {**entry.defaults, **config}
    _check_keys(name, entry, merged)
    return entry.factory(**merged)


def check_image_size(name: str, config: Dict[str, Any], image_size: int) -> None:
    """Raise ConfigError (one line, naming sizes that work) if ``name`` with ``config`` cannot take
    ``image_size`` x ``image_size`` images. The factory's hook ``check_image_size(image_size, config)``
    receives the full config (defaults filled in); networks without the hook accept any size.
    """
    entry = _entry(name)
    _check_keys(name, entry, {**entry.defaults, **config})
    hook = getattr(entry.factory, "check_image_size", None)
    if hook is not None:
        hook(image_size, {**_defaults(name), **config})


# -- network levels for a small input (a latent) -----------------------------------------------
def fit_levels(name: str, options: Dict[str, Any], user_options: Dict[str, Any]) -> Dict[str, Any]:
    """Trim the network's *default* ``channel_mult`` so its levels fit ``options["image_size"]``.

    A latent is small (64 px through an 8x VAE is 8x8), so default levels made for pixels would
    halve it to 1x1 or not divide it at all. Keep the first k levels, k the largest with the
    lowest feature map still >= MIN_LATENT_RES and an exact division. Levels the user set
    (``channel_mult`` in ``user_options``) are kept as they are; networks without levels (DiT)
    are returned unchanged. Returns ``options`` itself when nothing changes.
    """
    if "channel_mult" in user_options:
        return options
    defaults = _defaults(name)
    if "channel_mult" not in defaults:
        return options
    mult = options.get("channel_mult", defaults["channel_mult"])
    if mult is None:  # resolved per image size by the network (adm): ask it
        try:
            mult = build(name, **options).config["channel_mult"]
        except ConfigError:
            return options
    size = int(options["image_size"])
    k = 1
    for levels in range(1, len(mult) + 1):
        div = 2 ** (levels - 1)
        if size % div == 0 and size // div >= min(MIN_LATENT_RES, size):
            k = levels
    if k == len(mult):
        return options
    trimmed = dict(options, channel_mult=list(mult[:k]))
    try:
        check_image_size(name, trimmed, trimmed["image_size"])
    except ConfigError:
        return options
    return trimmed


def fits(name: str, options: Dict[str, Any], user_options: Dict[str, Any]) -> bool:
    """Whether ``name`` takes ``options["image_size"]`` once :func:`fit_levels` has trimmed its levels."""
    fitted = fit_levels(name, options, user_options)
    try:
        check_image_size(name, fitted, fitted["image_size"])
        return True
    except ConfigError:
        return False


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown network {name!r}; choose one of {', '.join(available())}") from None


def _params(factory: Callable) -> Dict[str, inspect.Parameter]:
    sig = inspect.signature(factory)
    return {k: p for k, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _check_keys(name: str, entry: _Entry, config: Dict[str, Any]) -> None:
    factory = entry.factory
    sig = inspect.signature(factory)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    params = _params(factory)
    unknown = sorted(set(config) - set(params))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for {entry.kind} {name!r}; valid options: {', '.join(params)}"
        )
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in config]
    if missing:
        raise ConfigError(f"{entry.kind} {name!r} needs option {missing[0]!r}")


def _load_all() -> None:
    """Import every network module of this package so its ``@register`` runs."""
    package = importlib.import_module(__package__)
    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.name.startswith("_") and mod.name not in _NOT_NETWORKS:
            importlib.import_module(f"{__package__}.{mod.name}")


__all__ = ["MIN_LATENT_RES", "available", "build", "check_image_size", "fit_levels", "fits", "kind_of", "options", "register"]
