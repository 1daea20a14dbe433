"""Interpolation between two seeds (slerp of x_T) or two images (the DDPM paper's way, via x_t)."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..diffusion.interpolation import lerp, mix_lambdas, slerp, timesteps_from
from ..diffusion.samplers.common import make_generators, randn_like
from ..diffusion.schedule import q_sample
from ..diffusion.timesteps import default_spacing
from ..errors import UserError
from .config import SampleConfig
from .results import Interpolation


def interpolate(pipe, images: Optional[Sequence[Any]] = None, seeds: Sequence[int] = (0, 1), class_label=None, *,
                t: Optional[int] = None, num_mix: int = 9, config: Optional[SampleConfig] = None, seed: int = 0,
                progress: bool = False, **options) -> Interpolation:
    """``num_mix`` images walking from one end to the other (lambda = 0, ..., 1).

    - ``images`` None: between the samples of ``seeds[0]`` and ``seeds[1]``: x_T =
      slerp(noise(seed A), noise(seed B), lambda), then the sampler from T - 1. Frame 0 is
      exactly ``generate(seeds=[A])`` (and the last frame ``generate(seeds=[B])`` for a
      deterministic sampler: stochastic samplers draw every frame's noise from seed A, so the
      frames vary smoothly).
    - ``images`` = two paths (or uint8 (H, W, C) arrays): both are loaded as for training,
      diffused to step ``t`` (default T/2) with one shared noise (seed ``seed``), mixed
      linearly on x_t, then denoised by the sampler over ``steps`` timesteps from t to 0.
      Small t stays close to the sources; large t gives more novel, less faithful frames.

    ``class_label``: one class to condition on; None on a conditional model uses the
    unconditional (null-class) model.
    """
    from ..data.io import to_uint8

    if class_label == "all":
        raise UserError("an interpolation is conditioned on one class; give a class name or index, or none")
    y_index = pipe.resolve_class(class_label)
    if isinstance(num_mix, bool) or not isinstance(num_mix, numbers.Integral) or num_mix < 2:
        raise UserError(f"num_mix (--num-mix) must be an integer >= 2 (the two ends and the frames between), got {num_mix!r}")
    config, opts = pipe.prepare(config, options)
    num_mix = int(num_mix)
    lambdas = mix_lambdas(num_mix)
    sources = None
    if images is None:
        if t is not None:
            raise UserError("t (--t) applies to image interpolation (--images); seed interpolation starts from pure noise at step T-1")
        if len(seeds) != 2:
            raise UserError(f"give exactly two seeds to interpolate between, got {len(seeds)}")
        timesteps = pipe.timesteps(config)
        (a, b), _ = pipe.noise([int(s) for s in seeds])
        x_mix = torch.stack([slerp(a, b, lam) for lam in lambdas])
        gen_seed = int(seeds[0])
    else:
        timesteps, x_mix, sources = _image_mix(pipe, images, t, config, seed, lambdas)
        gen_seed = seed
    y = None if y_index is None else torch.full((num_mix,), y_index, dtype=torch.long)
    # every frame draws its sampler noise from the same seed, so the frames vary smoothly
    frames = pipe.sample_batches([gen_seed] * num_mix, y, config, opts, timesteps=timesteps, x_T=x_mix, progress=progress, desc="interpolate")
    mode = "seeds" if images is None else "images"
    return Interpolation(to_uint8(frames), lambdas, mode, sources, [float(v) for v in timesteps], y_index)


def _image_mix(pipe, images, t, config: SampleConfig, seed: int, lambdas):
    """(timesteps from t, the mixed x_t per lambda, the sources as uint8 (2, H, W, C))."""
    last = pipe.schedule.num_steps - 1
    if len(images) != 2:
        raise UserError(f"give exactly two images to interpolate between, got {len(images)}")
    if t is None:
        t = pipe.schedule.num_steps // 2
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= t <= last:
        raise UserError(f"t (--t) must be an integer timestep in 0..{last} (this model has {last + 1} diffusion steps), got {t}")
    if isinstance(config.steps, str):
        raise UserError(f"a respacing string ({config.steps!r}) cannot start at step t; give a number of steps")
    try:
        timesteps = timesteps_from(pipe.schedule, int(t), config.steps, config.spacing or default_spacing(config.sampler))
    except ValueError as e:
        raise UserError(str(e)) from None
    sources = torch.from_numpy(np.stack([load_source(pipe, im) for im in images]))
    x0 = sources.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(pipe.device)
    if pipe.codec is not None:  # interpolate the images' latents (posterior means, scaled)
        x0 = pipe.codec.encode(x0)
    noise = randn_like(x0[:1], make_generators([seed], pipe.device)[0]).expand_as(x0)
    x_t = q_sample(pipe.schedule, x0, torch.full((2,), t, dtype=torch.long, device=pipe.device), noise)
    return timesteps, torch.stack([lerp(x_t[0], x_t[1], lam) for lam in lambdas]), sources


def load_source(pipe, image) -> np.ndarray:
    """A path (resized / center-cropped like training data) or a uint8 (H, W, C) array."""
    if isinstance(image, np.ndarray) or isinstance(image, torch.Tensor):
        arr = np.asarray(image)
        want = (pipe.image_size, pipe.image_size, pipe.channels)
        if arr.dtype != np.uint8 or arr.shape != want:
            raise UserError(f"an image array must be uint8 {want} for this model, got {arr.dtype} {arr.shape}")
        return arr
    from ..data.folder import load_image

    path = Path(image)
    if not path.is_file():
        raise UserError(f"image {path} does not exist; check the path")
    try:
        return load_image(path, pipe.image_size, pipe.channels)
    except Exception as e:  # Pillow raises many kinds for a bad file
        raise UserError(f"cannot read image {path}: {e}") from None


__all__ = ["interpolate", "load_source"]
