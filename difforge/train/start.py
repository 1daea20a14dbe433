"""Start or resume a training run from a settings file plus flat overrides (what ``difforge train``,
``train-vae`` and ``train-classifier`` do after parsing their flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

from ..config import Config, field_sections, parse_int_tuple
from ..errors import ConfigError

TUPLE_OPTIONS = ("channel_mult", "attention_resolutions")  # network options written as "1,2,2"


def parse_option_value(text: str) -> Any:
    """A ``KEY=VALUE`` option's value as YAML reads it (``2`` -> 2, ``true`` -> True), else the text."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def network_options(options: Mapping[str, Any], items: Iterable[str] = ()) -> Dict[str, Any]:
    """Network options from named values (None = not given; ``"1,2,2"`` lists parsed) and
    ``KEY=VALUE`` items (``-`` in keys read as ``_``)."""
    out = {}
    for key, value in options.items():
        if value is not None:
            out[key] = list(parse_int_tuple(value, key)) if key in TUPLE_OPTIONS else value
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--network-option {item!r} must look like KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = parse_option_value(v)
    return out


def config_overrides(values: Mapping[str, Any], options: Optional[Mapping[str, Any]] = None, items: Iterable[str] = ()) -> Dict[str, Any]:
    """Flat config overrides: the config fields of ``values`` that are set, plus the network
    options (:func:`network_options`). A VAE file alone means latent diffusion."""
    out = {name: values[name] for name in field_sections() if values.get(name) is not None}
    net = network_options(options or {}, items)
    if net:
        out["network_options"] = net
    if out.get("vae") and "latent" not in out:
        out["latent"] = True
    return out


def resumed_epoch(run_dir: Union[str, Path]) -> Optional[float]:
    """The epoch a run's last checkpoint reached (from ``checkpoints/last.safetensors``), or None."""
    from ..modelfile import read_metadata

    path = Path(run_dir) / "checkpoints" / "last.safetensors"
    try:
        return float(read_metadata(path)["train"]["epoch"])
    except Exception:  # noqa: BLE001 - no checkpoint or an older file: nothing to say
        return None


def start_epoch_note(run_dir: Union[str, Path], start_epoch: Optional[int]) -> Optional[str]:
    """IDDM's ``--start_epoch N``: the run continues from its checkpoint; one line when N differs."""
    epoch = resumed_epoch(run_dir)
    if start_epoch is None or epoch is None or round(epoch) == start_epoch:
        return None
    return (f"--start_epoch {start_epoch}: {run_dir} was saved at epoch {epoch:g}; "
            f"continuing from epoch {epoch:g} (the checkpoint's), with the optimizer and EMA state")


def start_run(config_file: Optional[str], overrides: Dict[str, Any], *, resume: Union[str, bool, None] = None,
              pretrain: Optional[str] = None, progress: bool = True, defaults: Optional[Mapping[str, Any]] = None,
              resume_name: Optional[str] = None, start_epoch: Optional[int] = None) -> Tuple[Any, Any]:
    """Settings file + overrides -> a finished run; ``(trainer, result)``.

    ``config_file`` is the base and ``overrides`` win (network options merge). ``resume=True``
    names the run by ``run``/``runs_dir`` as IDDM does, or by ``resume_name`` in ``runs_dir``
    (IDDM's ``--load_model_dir``); ``start_epoch`` (IDDM's) only adds a log line when the
    checkpoint's epoch differs. ``defaults`` (e.g. a task's network) apply to a new run only: a
    resumed run keeps its own config.yaml.
    """
    from .logging import get_logger
    from .trainer import Trainer

    base = Config.load(config_file) if config_file else None
    if base is not None and "network_options" in overrides:
        overrides["network_options"] = {**base.model.network_options, **overrides["network_options"]}
    if resume_name and not resume:  # IDDM reads it only when resuming
        get_logger().info(f"note: --load_model_dir {resume_name} is used with --resume True only; ignored")
    if resume is True:
        cfg = (base or Config()).override(**{k: v for k, v in overrides.items() if k in ("run", "runs_dir")})
        resume = str(Path(cfg.train.runs_dir) / (resume_name or cfg.train.run))
        if resume_name:
            overrides["run"] = resume_name  # the run continues in its own folder
    if resume:
        note = start_epoch_note(resume, start_epoch)
        if note:
            get_logger().info(f"note: {note}")
    if not resume:
        for key, value in (defaults or {}).items():
            if key == "network_options" and "network_options" in overrides:  # a preset's options under the flags'
                overrides[key] = {**value, **overrides[key]}
            overrides.setdefault(key, value)
    trainer = Trainer(base, resume=resume, pretrain=pretrain, progress=progress, **overrides)
    return trainer, trainer.fit()
