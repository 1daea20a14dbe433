"""A run folder's config.yaml as a resume reads it: settings added since the run was made take the
value their absence meant then, not today's default, so a resumed run keeps training what it trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import yaml

from ..config import Config, field_sections

# setting -> what a config.yaml without it meant (the behaviour before the setting existed)
ABSENT_MEANS: Dict[str, Any] = {
    "sr_residual": False,  # upsamplers diffused x itself before the residual default (train/tasks/superres.py)
}


def load_run_config(path) -> Config:
    """``Config.load(path)`` with :data:`ABSENT_MEANS` for the settings the file does not have."""
    config = Config.load(path)
    raw = yaml.safe_load(Path(path).read_text()) or {}
    where = field_sections()
    absent = {k: v for k, v in ABSENT_MEANS.items() if k not in (raw.get(where[k]) or {})}
    return config.override(**absent) if absent else config


__all__ = ["ABSENT_MEANS", "load_run_config"]
