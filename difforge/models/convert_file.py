"""A checkpoint file + a conversion config -> difforge weights and model-file metadata.

What ``difforge convert`` runs: the config is a preset name (``adm-imagenet64``, ``dit-xl/2``, ...)
or a ``.yaml``/``.json`` file of options (difforge's names or the original projects' flags),
single options override it, and :mod:`difforge.models.convert` does the mapping and checking.
Writing the model file is the caller's (the model-file layer sits above the networks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import UserError
from . import convert as conv

SOURCES = (*conv.CONVERTERS, "iddm")  # "openai-adm", "dit", "iddm" (IDDM's checkpoint dict: .convert_iddm)


def read_config(spec: Optional[str], source: str) -> Tuple[Dict[str, Any], Optional[str]]:
    """(options, preset name or None) of ``spec``: a preset of ``source``, or a .yaml/.json file."""
    from . import adm, dit

    if spec is None:
        return {}, None
    presets = {"openai-adm": adm.PRESETS, "dit": {"dit": {}, **dit.PRESETS}}[source]
    if spec in presets:
        return dict(presets[spec]), spec
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--config {spec}: no such file, and not a {source} preset ({', '.join(presets)})")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the file's
        raise UserError(f"--config {spec} could not be parsed ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {spec} must hold a mapping of option: value")
    return data, None


def guess_source(path) -> Optional[str]:
    """``iddm``, ``dit`` or ``openai-adm`` for a checkpoint whose keys say which (weights_only
    load); None when unreadable or unknown. For error messages: conversion never guesses."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a hint only
        return None
    if not isinstance(obj, dict):
        return None
    if "ema_model" in obj or "classes_name" in obj:
        return "iddm"
    inner = next((obj[k] for k in ("ema", "model", "state_dict") if isinstance(obj.get(k), dict)), obj)
    keys = [k[len("module."):] if str(k).startswith("module.") else str(k) for k in inner]
    if any(k.startswith(("x_embedder.", "t_embedder.")) for k in keys):
        return "dit"
    if any(k.startswith("input_blocks.") for k in keys):
        return "openai-adm"
    return None


def convert_command(path) -> str:
    """The ``difforge convert`` line for the checkpoint ``path`` (its format named when recognised)."""
    source = guess_source(path)
    config = " --config CONFIG" if source in ("openai-adm", "dit") else ""
    return f"difforge convert {path} OUT.safetensors --from {source or 'iddm|openai-adm|dit'}{config}"


def read_class_names(text: Optional[str]) -> Optional[List[str]]:
    """Class names: a text file with one name a line, or comma-separated names; None stays None."""
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [n.strip() for n in text.split(",") if n.strip()]


def convert_checkpoint(src, source: str, config: Optional[str] = None,
                       overrides: Optional[Mapping[str, Any]] = None) -> Tuple[conv.Converted, Dict[str, Any]]:
    """``(converted, metadata)`` of the checkpoint ``src`` in format ``source``.

    ``config``: a preset or options file (:func:`read_config`); ``overrides``: single options
    that win over it (None values ignored), e.g. ``image_size``, ``class_names``, ``rescale_timesteps``.
    """
    if source == "iddm":  # the checkpoint carries its own settings
        from .convert_iddm import convert_iddm_checkpoint

        if config is not None:
            raise UserError("--config is not used with --from iddm: the IDDM checkpoint holds its own settings")
        return convert_iddm_checkpoint(src, overrides)
    mapping, preset = read_config(config, source)
    mapping.update({k: v for k, v in (overrides or {}).items() if v is not None})
    net_options, extra = conv.options_from_config(source, mapping)
    if preset in conv.RELEASE_DIFFUSION:
        extra = {**conv.RELEASE_DIFFUSION[preset], **extra}
    state_dict = conv.load_torch_state_dict(src)
    converter, _ = conv.CONVERTERS[source]
    converted = converter(state_dict, net_options)
    return converted, conv.model_meta(converted, source, extra, Path(src).name)
