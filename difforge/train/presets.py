"""Named recipes: ``--preset NAME`` sets these values for a new run; flags given beside it win.

- ``fast`` (the defaults): the demo's recipe, for small data on a CPU budget: cosine schedule,
  v target, warm-up + cosine LR peaking at 2e-3 (``lr: auto``: 1e-3 for other networks, fine-tunes, latent and
  text runs), EMA 0.995 (with power-function EMAs of relative
  width 0.05 / 0.2 beside it and the best kept, :mod:`difforge.train.validation`), the 1.2 M-parameter ``unet-tiny``, channels from
  the data, a UNet that folds 2 x 2 pixels from 64 px (``patch_size`` 2, train/autonet.py). Measured on a 2-core CPU for 12 minutes on a grey 10-class glyph folder: 3,932 steps
  and 80% judge accuracy against 805 steps and 57% with ``classic`` (issue 16).
  A CPU run from 64 px with a time budget trains as a cascade (``cascade: auto``, :mod:`difforge.train.cascade`).
- ``iddm``: the defaults of IDDM's ``tools/train.py`` / ``iddm/config/setting.py`` (chairc/
  Integrated-Design-Diffusion-Model): linear noise schedule, eps target, MSE, AdamW at 3e-4 with a
  linear LR decay, EMA 0.995, GELU, the full-size UNet at full resolution, RGB, no flips. IDDM's batch size of 2 is
  a GPU-memory choice and is not copied (difforge's 16 stays).
- ``classic``: difforge's defaults before the presets (linear, eps, constant LR 2e-4, EMA 0.999,
  the 9.9 M ``unet`` at full resolution, RGB, random horizontal flips, one EMA), for comparing with older runs.
"""

from __future__ import annotations

from typing import Any, Dict

from ..errors import ConfigError

PRESETS: Dict[str, Dict[str, Any]] = {
    "fast": dict(noise_schedule="cosine", noise_shift="auto", target="v", loss="mse", optimizer="adamw", lr="auto", lr_schedule="warmup_cosine",
                 ema_decay=0.995, network="unet-tiny", channels="auto", hflip=False, ema_select=True),
    "iddm": dict(noise_schedule="linear", noise_shift=1.0, target="eps", loss="mse", optimizer="adamw", lr=3e-4, lr_schedule="linear",
                 ema_decay=0.995, network="unet", network_options={"act": "gelu", "patch_size": 1}, channels=3, hflip=False,
                 ema_select=False, cascade=False),
    "classic": dict(noise_schedule="linear", noise_shift=1.0, target="eps", loss="mse", optimizer="adamw", lr=2e-4, lr_schedule="constant",
                    ema_decay=0.999, network="unet", network_options={"patch_size": 1}, channels=3, hflip=True, ema_select=False, cascade=False),
}
DEFAULT_PRESET = "fast"


def preset_values(name: str) -> Dict[str, Any]:
    """The flat config values of preset ``name`` (a copy)."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not known; choose one of {', '.join(PRESETS)}")
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[name].items()}


__all__ = ["PRESETS", "DEFAULT_PRESET", "preset_values"]
