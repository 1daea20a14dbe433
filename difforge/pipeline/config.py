"""SampleConfig: every sampling default, written once.

The CLI (``sample``, ``interpolate``, ``demo``), the server, the trainer's previews and the
benchmarks all start from ``SampleConfig()`` and change what the user asked for, so a default
(sampler, steps, CFG scale, ...) is defined here and nowhere else. Sampler-specific options
(``variance`` of ddpm, ``s_churn`` of euler, ...) are not fields: each sampler declares them in
its signature, and :func:`check_sampler_options` checks them against it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from ..diffusion.samplers import get_sampler
from ..errors import UserError

Steps = Union[int, str, None]


# The guidance scale by image size: (from this many px, scale), measured by sweeps on the 12-minute default models
# (UniPC 20, 100 images, a judge trained on real images only). 32 px (benchmarks/cfg_sweep.py): defects acc 0.98 /
# judge distance 55 at 1.5, 1.00 / 59 at 2, 1.00 / 179 at 3; glyphs 1.00 / 12 at 1.5, 1.00 / 23 at 2, 1.00 / 82 at 3
# (floors 21 and ~9): stronger guidance bought no accuracy and cost variety. 64 px (benchmarks/quality_budget.py
# --cfg 1.5 2 3, 2 x 2 fold, --max-minutes 12 on 2 cores): defects acc 1.00 / 1.00 / 1.00, distance 49.9 / 27.8 / 148;
# glyphs acc 0.91 / 0.945 / 0.99, distance 26.3 / 16.0 / 52.3 (floors 4.0): every 64 px model was best at 2.
CFG_BY_SIZE = ((64, 2.0), (0, 1.5))

# The guidance scale of a model conditioned on text, whatever its size: a caption asks for several things at once
# (defect, material, position) and weak guidance follows some of them. Measured with benchmarks/text_conditioning.py
# on the 12-minute built-in text model (32 px, text layout 4, 100 seen captions, DDIM 25 in the guidance interval):
# defect / material / position 0.85 / 1.00 / 0.62 at 1.5, 0.90 / 0.98 / 0.71 at 3, 0.94 / 0.98 / 0.72 at 4,
# 0.95 / 0.97 / 0.77 at 5, 0.92 / 0.89 / 0.79 at 8. 4 rather than 5: within noise of it on all three and nearer the
# class sweeps above, where stronger guidance cost variety.
TEXT_CFG = 4.0

# The guidance interval in the VE noise level sigma (Kynkaenniemi et al. 2024): guide only where sigma is in (0.1, 3],
# the conditional prediction alone elsewhere. Measured with benchmarks/cfg_sweep.py --intervals on the 12-minute
# default models (UniPC 20, 100 images, the judge of quality_budget.py): at the default scales the judge distance is
# the same as guiding every step (32 px defects 54.6 vs 54.8, glyphs 11.2 vs 11.6; accuracy 0.97 / 0.99 vs 0.98 / 1.00,
# one image in ~100) with 26 instead of 40 network rows per image; EDM2-S's (0.28, 5.42] and (0.5, 10] were worse
# (defects 61.6 / 71.2). None = every step (``--cfg-interval all``).
CFG_INTERVAL = (0.1, 3.0)

# A text model's interval: guidance at every step from sigma 0.1 up, the noisiest ones too. Where on the image a
# defect goes is settled at high noise, above CFG_INTERVAL's 3, and unguided steps there let the model hedge (two
# faint scratches either side of the asked place, a pit too many). Measured with benchmarks/text_conditioning.py's
# judges on four 12-minute built-in text models (32 px, --mask-weight 10, UniPC 25, guidance 4, 100 seen / 100
# held-out captions): seen defect / material / position 0.99 / 0.99 / 0.77 -> 0.98 / 0.99 / 0.84 (every model's
# position rose: 0.75 -> 0.88, 0.75 -> 0.84, 0.78 -> 0.81, 0.78 -> 0.82), held-out position 0.70 -> 0.74, at a cost
# to the held-out defect type, 0.62 -> 0.57 (README "Text conditioning"); guidance at every step, 0.1 included,
# scored the same as (0.1, inf); scale 3 / 5 in (0.1, inf): position 0.81 / 0.85.
TEXT_CFG_INTERVAL = (0.1, math.inf)

# The place contrast a of a text model's prompt that names a place (pipeline/places.py): the guided step plus s * a
# times (its prediction - the mean of its neighbouring places' predictions). Measured with benchmarks/text_conditioning.py's
# judges on six 12-minute built-in text models (32 px, UniPC 25, guidance 4 in TEXT_CFG_INTERVAL, 100 seen captions):
# seen defect / material / position 0.985 / 0.99 / 0.845 without, 0.94 / 0.98 / 0.92 at a = 1 (every model's position
# rose: 0.88 -> 0.96, 0.84 -> 0.90, 0.81 -> 0.91, 0.82 -> 0.93, 0.84 -> 0.90, 0.88 -> 0.90); a = 0.5 / 2 on two of them:
# position 0.885 / 0.975, defect 0.955 / 0.905. On held-out combinations it cost the defect type (0.53 -> 0.41), so only
# a combination the captions had is contrasted (places.was_seen). Each neighbour is one more network row per step.
PLACE_CONTRAST = 1.0

# The analogy strength of a text model's prompt whose combination no training caption had (pipeline/analogy.py): the
# share of its prediction composed from three captions it had (crack on steel + scratch on wood - scratch on steel).
# Measured with benchmarks/text_conditioning.py's judges on eight 12-minute built-in text models (100 held-out captions,
# UniPC 25, guidance 4; README "Text conditioning"): defect / material / position 0.43 / 0.96 / 0.77 at 0, 0.81 / 0.93 /
# 0.81 at 0.75 (one model's defect 0.58), 0.84 / 0.89 / 0.83 at 1 (every model >= 0.63 on every attribute): 1 replaces
# the prompt's own prediction, which had learnt the surface's usual defect.
ANALOGY = 1.0

# Autoguidance's w (eps = (1 + w) eps - w eps_weak, ``--guide-model``), measured with benchmarks/autoguidance.py on an
# unconditional 64 px defect model (12 CPU-minutes) guided by a 3-minute run of the same data, 100 images, UniPC 20,
# inside the default interval: judge distance 309 unguided, 141 / 107 / 110 / 123 at w = 1 / 2 / 3 / 4 (recall 0.58 ->
# 0.82 at 2); guiding every step instead was worse at every w (201 / 160 / 187 / 194).
AUTOGUIDANCE_W = 2.0


def default_cfg(image_size: int, second_model: Optional[str] = None, text: bool = False) -> float:
    """The measured default guidance strength for images of ``image_size`` px: built-in CFG's scale s
    (:data:`CFG_BY_SIZE`, or :data:`TEXT_CFG` for a model conditioned on ``text``); with ``second_model``
    ``"uncond"`` (two-model CFG) the same strength as its w = s - 1, with ``"weak"`` (autoguidance)
    :data:`AUTOGUIDANCE_W`."""
    if second_model == "weak":
        return AUTOGUIDANCE_W
    s = TEXT_CFG if text else next(s for size, s in CFG_BY_SIZE if image_size >= size)
    return s - 1.0 if second_model == "uncond" else s


def cfg_defaults_text() -> str:
    """'2 from 64 px, 1.5 below; 4 for a text model' for help texts."""
    (big, s_big), (_, s_small) = CFG_BY_SIZE
    return f"{s_big:g} from {big} px, {s_small:g} below; {TEXT_CFG:g} for a text model"


def default_cfg_interval(text: bool = False) -> Tuple[float, float]:
    """The measured guidance interval of a model (``cfg_interval="auto"``): :data:`TEXT_CFG_INTERVAL` for a
    model conditioned on ``text``, else :data:`CFG_INTERVAL`."""
    return TEXT_CFG_INTERVAL if text else CFG_INTERVAL


def cfg_interval_text() -> str:
    """'0.1,3 (0.1,inf for a text model)': the default guidance intervals as the --cfg-interval flag takes them, for help texts."""
    def flag(iv):
        return ",".join(f"{v:g}" for v in iv)
    return f"{flag(CFG_INTERVAL)} ({flag(TEXT_CFG_INTERVAL)} for a text model)"


def interval_json(interval: Optional[Tuple[float, float]]):
    """A guidance interval as JSON for manifests: [lo, hi] with null for an infinite hi; null = every step."""
    return None if interval is None else [float(interval[0]), None if math.isinf(interval[1]) else float(interval[1])]


def interval_from_json(value) -> Optional[Tuple[float, float]]:
    """The inverse of :func:`interval_json`."""
    return None if value is None else (float(value[0]), math.inf if value[1] is None else float(value[1]))


@dataclass(frozen=True)
class SampleConfig:
    """How to sample. ``steps``: network evaluations (an int), an improved-diffusion respacing
    string (``"ddim50"``, ``"10,15,20"``), or None for every training step.

    ``cfg`` is the built-in classifier-free guidance scale s of eps_u + s (eps_c - eps_u)
    (1 = plain conditional); None = the model's default (:func:`default_cfg` of its image size,
    :attr:`Pipeline.default_cfg`). With a second, unconditional model (two-model guidance) the
    scale is w of (1 + w) eps_c - w eps_u; w = s - 1 gives the same strength, which is then its
    default. ``precision`` is used when a pipeline is loaded for this config.
    ``cfg_interval`` (sigma_lo, sigma_hi): guidance only where the VE noise level
    sigma(t) = sqrt((1 - ab_t) / ab_t) is in (lo, hi] (Kynkaenniemi et al. 2024), the plain
    conditional prediction elsewhere, at half the cost of a guided step; ``"auto"`` (the default) = the
    model's measured one (:func:`default_cfg_interval`: :data:`CFG_INTERVAL`, :data:`TEXT_CFG_INTERVAL` for a
    text model), None = every step.
    """

    # UniPC 20: on the exact Gaussian-mixture denoiser (benchmarks/samplers.py) closer to the data than
    # DDIM 50 with 40% of the network calls, under both schedules (FDx1000 cosine 0.18 vs 0.33,
    # linear 0.10 vs 0.71); DDPM 250: 0.06 / 0.38
    sampler: str = "unipc"
    steps: Steps = 20
    spacing: Optional[str] = None
    eta: Optional[float] = None
    cfg: Optional[float] = None  # the model's: default_cfg(image size)
    cfg_rescale: float = 0.0
    cfg_interval: Union[Tuple[float, float], str, None] = "auto"  # the model's; None: guidance at every step
    clip_x0: bool = True
    threshold: Optional[float] = None
    batch_size: int = 16
    precision: str = "auto"

    def replace(self, **changes) -> "SampleConfig":
        """A copy with ``changes``; None values keep the current setting where None is not a choice."""
        return dataclasses.replace(self, **changes)

    def check(self) -> "SampleConfig":
        """A UserError naming the field for a value no sampler can use; returns self."""
        for name in ("cfg", "cfg_rescale"):
            v = getattr(self, name)
            if name == "cfg" and v is None:
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"{name} (--{name.replace('_', '-')}) must be a finite number, got {v!r}")
        if not 0.0 <= self.cfg_rescale <= 1.0:
            raise UserError(f"cfg_rescale (--cfg-rescale) must be in [0, 1], got {self.cfg_rescale}")
        if self.cfg_interval is not None and self.cfg_interval != "auto":
            iv = self.cfg_interval
            if (not isinstance(iv, (tuple, list)) or len(iv) != 2 or not all(isinstance(v, (int, float)) for v in iv)
                    or math.isnan(iv[0]) or math.isnan(iv[1]) or not 0.0 <= iv[0] < iv[1]):
                raise UserError(f"cfg_interval (--cfg-interval LO,HI) must be two noise levels 0 <= sigma_lo < sigma_hi "
                                f"(inf allowed), e.g. 0.28,5.42; got {iv!r}")
        if self.eta is not None and not (math.isfinite(self.eta) and self.eta >= 0):
            raise UserError(f"eta (--eta) must be a finite number >= 0, got {self.eta}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise UserError(f"threshold (--threshold) must be a percentile in (0, 1], got {self.threshold}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UserError(f"batch_size (--batch-size) must be a whole number >= 1, got {self.batch_size!r}")
        if isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps < 1:
            raise UserError(f"steps (--steps) must be >= 1 (or a respacing string such as ddim25), got {self.steps}")
        return self

    @classmethod
    def split(cls, base: Optional["SampleConfig"] = None, **options) -> Tuple["SampleConfig", Dict[str, Any]]:
        """(``base`` with the fields among ``options``, the remaining sampler-specific options).

        ``eta`` is a field but also a sampler option: it goes to the sampler only when given.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in options.items() if k in names}
        rest = {k: v for k, v in options.items() if k not in names}
        config = (base or cls()).replace(**fields)
        if config.eta is not None:
            rest["eta"] = config.eta
        return config, rest


# arguments every sampler takes by contract; anything else keyword-only is a sampler option
_CONTRACT_ARGS = {"denoiser", "x_T", "schedule", "timesteps", "y", "generator", "callback"}


def sampler_options(name: str) -> Dict[str, Any]:
    """The options sampler ``name`` accepts beyond the sampler contract, with their defaults."""
    params = inspect.signature(get_sampler(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY and p.name not in _CONTRACT_ARGS}


def check_sampler_options(name: str, opts: Dict[str, Any]) -> None:
    """A UserError naming the sampler and the options it does take when ``opts`` has one it does not."""
    try:
        fn = get_sampler(name)
    except ValueError as e:
        raise UserError(str(e)) from None
    if any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
        return
    accepted = sampler_options(name)
    unknown = [k for k in opts if k not in accepted]
    if unknown:
        takes = ", ".join(f"{k} (default {v!r})" for k, v in accepted.items()) or "no options"
        given = ", ".join(f"{k} (--{k.replace('_', '-')})" for k in unknown)
        raise UserError(f"sampler {name} does not take {given}; it takes {takes}")


__all__ = ["AUTOGUIDANCE_W", "CFG_BY_SIZE", "CFG_INTERVAL", "PLACE_CONTRAST", "SampleConfig", "TEXT_CFG", "TEXT_CFG_INTERVAL", "cfg_defaults_text", "cfg_interval_text", "check_sampler_options", "default_cfg",
           "default_cfg_interval",
           "interval_from_json", "interval_json", "sampler_options"]
