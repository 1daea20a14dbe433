"""``noise_shift: auto``: the noise shift a new run trains with, decided from its image size before the task builds
its schedule (a shift of s divides every signal-to-noise ratio by s^2, :func:`difforge.diffusion.schedule.shift_alpha_bar`).

Why by size (simple diffusion, Hoogeboom et al. 2023): a noise level destroys less of a large image than of a small
one, because neighbouring pixels repeat each other and averaging them removes noise. The cosine schedule was drawn for
32-64 px images; a 16 px image needs *less* noise at every step for the model to spend its steps where its shapes
are decided. Measured (session 33, README "Less noise for the 16 px base"): 16 px glyph models, 12 minutes of one
thread beside another, through the same x4 upsampler to 64 px -- judge distance 4.9-5.2 unshifted, 3.9-4.1 at shift
0.5-0.71, 2.4-3.1 at 0.35 (two training seeds), 3.0 at 0.25; at 32 px the defect textures were *worse* shifted (0.71:
15.8 against 12.8-13.05), so from 32 px the schedule stays as it is (:data:`SHIFT_BY_SIZE`).

Decided only where measured: a new pixel-space diffusion run without captions on the cosine schedule, and a noisy
classifier (``train-classifier``) on that schedule, which must see the noise levels of the model it will guide.
Everything else gets 1 (no shift); a fine-tune keeps its model file's shift; a resumed run's config.yaml has the
number, and one from before the setting (no key) was unshifted (:data:`LEGACY_SHIFT`).
"""

from __future__ import annotations

from typing import Optional, Tuple

from ..config import Config

SHIFT_BY_SIZE = ((32, 1.0), (0, 0.35))  # (smallest image size, shift): the first row whose size the run reaches
LEGACY_SHIFT = 1.0  # a config.yaml written before ``noise_shift: auto`` existed: every run was unshifted then
SHIFTED_TASKS = ("diffusion", "classifier")


def shift_for_size(image_size: int) -> float:
    """The measured shift of a cosine-schedule run at ``image_size`` px (:data:`SHIFT_BY_SIZE`)."""
    return next(shift for size, shift in SHIFT_BY_SIZE if image_size >= size)


def choose_noise_shift(config: Config, new: bool, pretrain: Optional[str] = None) -> Tuple[Config, Optional[str]]:
    """``(config with noise_shift: auto settled to a number, the line to log or None)`` (see the module docstring).
    Called once the run's image size is settled (a cascade's base is smaller than the size asked for) and before the
    task builds its schedule; the line says why when it shifts, for the log once the data is known to be good (a run
    refused for its data ends with that one message)."""
    if config.diffusion.noise_shift != "auto":
        return config, None
    if not new:
        shift, why = LEGACY_SHIFT, "a run from before the setting"
    elif pretrain:
        shift, why = _file_shift(pretrain), f"the shift of {pretrain}"
    elif _measured(config):
        shift, why = shift_for_size(config.data.image_size), f"a {config.data.image_size} px cosine-schedule model"
    else:
        shift, why = 1.0, "not measured for this kind of run"
    note = None
    if shift != 1.0:
        note = f"noise shift auto: {shift:g} ({why}: every signal-to-noise ratio x {1 / shift ** 2:.1f}; --noise-shift 1 keeps the schedule as drawn)"
    return config.override(noise_shift=float(shift)), note


def _measured(config: Config) -> bool:
    return (config.train.task in SHIFTED_TASKS and config.diffusion.noise_schedule == "cosine" and not config.latent.latent
            and not config.model.text_encoder)


def _file_shift(path: str) -> float:
    """A fine-tune's model file's shift (1 for a file written before shifts existed, or one that cannot be read: the
    fine-tune's own loading names what is wrong with it)."""
    from ..errors import UserError
    from ..modelfile import read_metadata

    try:
        return float(read_metadata(path)["diffusion"].get("noise_shift", 1.0))
    except (UserError, KeyError, TypeError, ValueError, AttributeError):
        return 1.0


__all__ = ["LEGACY_SHIFT", "SHIFT_BY_SIZE", "choose_noise_shift", "shift_for_size"]
