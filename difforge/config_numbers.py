"""The bounds of every number in the config: one table, one check, one message naming the field.

Kept apart from :mod:`difforge.config` (the sections and their defaults): the table grows with every
numeric setting, and a reader looking for a default should not have to read past the bounds.
"""

from __future__ import annotations

import math
from typing import Dict

from .errors import ConfigError

MAX_IMAGE_SIZE = 4096  # 4096^2 x 3 floats is 200 MB per image before any network activation

# Every number in the config: field -> (integer?, low, high, low excluded?, high excluded?, why the bound).
# None as a bound means unbounded on that side. Checked by Config.validate through check_number.
NUMBERS: Dict[str, tuple] = {
    "image_size": (True, 8, MAX_IMAGE_SIZE, False, False, "one 4096 px image is 200 MB of floats before any activation"),
    "builtin_per_class": (True, 1, 100_000, False, False, ""),
    "builtin_seed": (True, 0, 2**63 - 1, False, False, ""),
    "diffusion_steps": (True, 1, 100_000, False, False, ""),
    "noise_shift": (False, 0.0, 64.0, True, False, "1 keeps the schedule, 2 divides every SNR by 4"),  # schedule.MAX_SHIFT
    "label_dropout": (False, 0.0, 1.0, False, True, "a probability; 1 would never train the classes"),
    "word_dropout": (False, 0.0, 1.0, False, True, "a probability; 1 would leave every caption empty"),
    "phrase_dropout": (False, 0.0, 1.0, False, True, "a probability; 1 would leave every caption empty"),
    "p2_gamma": (False, 0.0, 100.0, False, False, ""),
    "p2_k": (False, 0.0, 1e6, False, False, ""),
    "snr_gamma": (False, 0.0, 1e6, True, False, ""),
    "epochs": (True, 1, None, False, False, ""),
    "max_steps": (True, 1, None, False, False, ""),
    "max_minutes": (False, 0.0, 1e7, True, False, ""),
    "batch_size": (True, 1, 65_536, False, False, "images per micro-batch"),
    "num_workers": (True, 0, 256, False, False, ""),
    "lr": (False, 0.0, 1.0, True, False, "learning rates are far below 1"),
    "weight_decay": (False, 0.0, 10.0, False, False, ""),
    "warmup_steps": (True, 0, None, False, False, ""),
    "min_lr_ratio": (False, 0.0, 1.0, False, False, "a fraction of lr"),
    "ema_decay": (False, 0.0, 1.0, False, True, "1 would never update the EMA weights"),
    "augment_p": (False, 0.0, 1.0, False, False, "a probability"),
    "crop_p": (False, 0.0, 1.0, False, True, "a probability; 1 would never train on whole images"),
    "mask_weight": (False, 0.0, 1000.0, False, False, "0 = off, or auto"),
    "crop_size": (True, 0, MAX_IMAGE_SIZE, False, False, "0 = half the image size"),
    "grad_accum": (True, 1, 4096, False, False, ""),
    "grad_clip": (False, 0.0, 1e9, True, False, "omit it to disable clipping"),
    "seed": (True, 0, 2**63 - 1, False, False, ""),
    "log_every": (True, 1, None, False, False, ""),
    "save_every": (True, 0, None, False, False, "0 = off"),
    "save_every_epochs": (True, 0, None, False, False, "0 = off"),
    "save_start": (True, 0, None, False, False, ""),
    "checkpoint_every": (True, 1, None, False, False, ""),
    "preview_every": (True, 0, None, False, False, "0 = only at the end"),
    "preview_num": (True, 1, 1024, False, False, ""),
    "preview_steps": (True, 1, 100_000, False, False, ""),
    "eval_every": (True, 0, None, False, False, "0 = off"),
    "eval_num": (True, 1, 1_000_000, False, False, ""),
    "num_classes": (True, 1, 100_000, False, False, "omit it to accept any"),
    "latent_channels": (True, 1, 64, False, False, "e.g. 4 or 8"),
    "kl_weight": (False, 0.0, 1e6, False, False, ""),
    "scale": (True, 2, 8, False, False, "the high-res size / the low-res size"),
    "sr_blur": (False, 0.0, 10.0, False, False, "sigma in high-res pixels"),
    "sr_noise": (False, 0.0, 1.0, False, False, "std on the [-1, 1] scale"),
    "sr_jpeg": (True, 0, 100, False, False, "0 = no JPEG"),
    "noise_aug": (False, 0.0, 1.0, False, False, "the largest noise level, as a fraction of the diffusion steps"),
}


OPTIONAL_NUMBERS = ("epochs", "max_steps", "max_minutes", "grad_clip", "num_classes")  # None: not set
AUTO_NUMBERS = ("mask_weight", "lr", "noise_shift", "noise_aug")  # "auto": the run decides (train/settle.py, noise_shift.py, cascade_scale.py)


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_number(name: str, value, lo, hi, lo_open: bool = False, hi_open: bool = False, integer: bool = False, why: str = "") -> None:
    """One ConfigError naming the field and the allowed range unless ``value`` is a finite number in it."""
    allowed = _range_text(lo, hi, lo_open, hi_open) + (f" ({why})" if why else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r} must be {'an integer' if integer else 'a number'} {allowed}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer {allowed}")
    if not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number {allowed}")
    below = value <= lo if lo_open else value < lo
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        raise ConfigError(f"{name}={value!r} must be {allowed}")


__all__ = ["AUTO_NUMBERS", "MAX_IMAGE_SIZE", "NUMBERS", "OPTIONAL_NUMBERS", "check_number"]
