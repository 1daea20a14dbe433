"""Every network by name: ``build(name, **config)`` makes it, ``available()`` lists the names.

A network registers its class (or a builder function) with ``@register("name")``; a preset is the
same class registered under another name with other defaults::

    register("unet-tiny", base_channels=32, channel_mult=[1, 2, 2])(UNet)

A built network carries ``net.arch`` (its canonical name) and ``net.config`` (every constructor
argument, JSON-serialisable), so ``build(net.arch, **net.config)`` rebuilds it exactly; that is
what a checkpoint stores. Modules in this package are imported on first need, so a new network
file only has to call :func:`register`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

from torch import nn

from ..errors import ConfigError

_NOT_NETWORKS = {"registry", "layers", "info"}


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    defaults: Dict[str, Any] = field(default_factory=dict)


_REGISTRY: Dict[str, _Entry] = {}


def register(name: str, **defaults: Any) -> Callable:
    """Decorator: make ``factory`` buildable as ``name``; ``defaults`` override its own defaults."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"network name {name!r} is already registered by {_REGISTRY[name].factory!r}")
        _REGISTRY[name] = _Entry(factory, dict(defaults))
        return factory

    return deco


def available() -> List[str]:
    """All registered network names, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def options(name: str) -> Dict[str, Any]:
    """The full default config of network ``name`` (preset defaults over constructor defaults)."""
    entry = _entry(name)
    params = _params(entry.factory)
    out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(entry.defaults)
    return out


def build(name: str, **config: Any) -> nn.Module:
    """Build network ``name``; ``config`` overrides its defaults. Bad names or keys -> ConfigError."""
    entry = _entry(name)
    merged = {**entry.defaults, **config}
    _check_keys(name, entry.factory, merged)
    return entry.factory(**merged)


def check_image_size(name: str, config: Dict[str, Any], image_size: int) -> None:
    """Raise ConfigError (one line, naming sizes that work) if ``name`` with ``config`` cannot take
    ``image_size`` x ``image_size`` images. The factory's hook ``check_image_size(image_size, config)``
    receives the full config (defaults filled in); networks without the hook accept any size.
    """
    entry = _entry(name)
    _check_keys(name, entry.factory, {**entry.defaults, **config})
    hook = getattr(entry.factory, "check_image_size", None)
    if hook is not None:
        hook(image_size, {**options(name), **config})


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown network {name!r}; choose one of {', '.join(sorted(_REGISTRY))}") from None


def _params(factory: Callable) -> Dict[str, inspect.Parameter]:
    sig = inspect.signature(factory)
    return {k: p for k, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _check_keys(name: str, factory: Callable, config: Dict[str, Any]) -> None:
    sig = inspect.signature(factory)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    params = _params(factory)
    unknown = sorted(set(config) - set(params))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for network {name!r}; valid options: {', '.join(params)}"
        )
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in config]
    if missing:
        raise ConfigError(f"network {name!r} needs option {missing[0]!r}")


def _load_all() -> None:
    """Import every network module of this package so its ``@register`` runs."""
    package = importlib.import_module(__package__)
    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.name.startswith("_") and mod.name not in _NOT_NETWORKS:
            importlib.import_module(f"{__package__}.{mod.name}")


__all__ = ["available", "build", "check_image_size", "options", "register"]
