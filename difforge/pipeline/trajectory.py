"""Denoising-progress pictures: which sampler steps to show, and a generate that keeps them."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch

from ..diffusion.schedule import Schedule
from ..diffusion.schedule import alpha_bars, vp_coefs
from ..errors import UserError
from .config import SampleConfig
from .results import Generated, Trajectory


def trajectory_steps(schedule: Schedule, timesteps: Sequence[float], frames: int) -> List[int]:
    """Which of a sampler's steps to show: ``frames`` indices, coarse early and fine late.

    Frames are spaced evenly in the angle phi = arccos(sqrt(ab_t)) of x_t = cos(phi) x0 +
    sin(phi) eps, i.e. by how far x_t has turned from noise toward the image, so the picture
    emerges at an even pace. With the linear schedule most early steps are pure noise (phi
    barely moves) and get few frames; with the cosine schedule phi is linear in t. Each target
    angle takes the nearest step, pushed on where needed so the indices are strictly increasing;
    the first and the last step are always shown. ``frames`` >= the number of steps shows every step.
    """
    n = len(timesteps)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if frames >= n:
        return list(range(n))
    if frames == 1:
        return [n - 1]
    phi = [math.acos(min(1.0, vp_coefs(a)[0])) for a in alpha_bars(schedule, timesteps, check=False)]
    picks: List[int] = []
    for j in range(frames):
        target = phi[0] + (phi[-1] - phi[0]) * j / (frames - 1)
        nearest = min(range(n), key=lambda i: abs(phi[i] - target))
        lo = picks[-1] + 1 if picks else 0
        picks.append(min(max(nearest, lo), n - frames + j))
    return picks


def trajectory(pipe, num: int = 4, class_label=None, *, frames: int = 10, config: Optional[SampleConfig] = None, seed: int = 0,
               seeds: Optional[Sequence[int]] = None, progress: bool = False, **options) -> Trajectory:
    """Generate like :meth:`Pipeline.generate` (same images for the same arguments) and keep snapshots.

    The sampler's ``callback(i, x_t, x0_pred)`` records ``frames`` of its steps, chosen by
    :func:`trajectory_steps` (coarse early, fine late).
    """
    from ..data.io import to_uint8

    labels, seeds = pipe.request(num, class_label, seed, seeds)
    config, opts = pipe.prepare(config, options)
    timesteps = pipe.timesteps(config)
    try:
        picks = trajectory_steps(pipe.schedule, timesteps, frames)
    except ValueError as e:
        raise UserError(str(e)) from None
    wanted = set(picks)
    kept: Dict[int, Dict[int, tuple]] = {}  # batch start -> step -> (x_t, x0) as uint8

    def record(start, _b, i, x_t, x0):
        if i in wanted:
            kept.setdefault(start, {})[i] = (to_uint8(pipe.to_pixels(x_t)), to_uint8(pipe.to_pixels(x0)))

    x = pipe.sample_batches(seeds, labels, config, opts, timesteps=timesteps, progress=progress, desc="trajectory", on_step=record)
    starts = sorted(kept)
    xts = torch.cat([torch.stack([kept[s][i][0] for i in picks]) for s in starts], dim=1)
    x0s = torch.cat([torch.stack([kept[s][i][1] for i in picks]) for s in starts], dim=1)
    final = Generated(to_uint8(x), labels, pipe.class_names)
    return Trajectory(xts, x0s, picks, [float(timesteps[i]) for i in picks], final)


__all__ = ["trajectory", "trajectory_steps"]
