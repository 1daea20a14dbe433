"""Draw a batch of samples: seeds -> x_T -> a registered sampler -> x_0 in [-1, 1].

Shared by the Pipeline (CLI, server) and the trainer's previews. Image i always starts from
the generator seeded with ``seeds[i]`` and draws all of its noise from it, so an image depends
on its seed only, not on the batch size or its position in the batch.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from tqdm import tqdm

from .denoiser import Denoiser
from .samplers import get_sampler
from .samplers.common import randn_like
from .timesteps import default_spacing, sampling_timesteps


def make_generators(seeds: Sequence[int], device: torch.device) -> List[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) & 0xFFFF_FFFF_FFFF_FFFF)
        gens.append(g)
    return gens


def sample_images(
    denoiser: Denoiser,
    *,
    shape: Sequence[int],
    seeds: Sequence[int],
    labels: Optional[torch.Tensor] = None,
    sampler: str = "ddim",
    steps: Optional[int] = 50,
    spacing: Optional[str] = None,
    batch_size: int = 16,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    callback: Optional[Callable] = None,
    clamp: bool = True,
    **opts,
) -> torch.Tensor:
    """Return float samples (N, C, H, W) in [-1, 1] for ``len(seeds)`` images.

    ``clamp=False`` returns them unclamped (latents of a latent model are not bounded).

    ``callback(done_images, total_images, step, num_steps)`` reports progress across batches.
    ``steps=None`` means every training step (DDPM's 1000).
    """
    fn = get_sampler(sampler)
    schedule = denoiser.schedule
    spacing = spacing or default_spacing(sampler)
    timesteps = sampling_timesteps(schedule.num_steps, steps or schedule.num_steps, spacing, schedule=schedule)
    n = len(seeds)
    out = []
    bar = tqdm(total=n * len(timesteps), disable=not progress, desc=f"sample {sampler}", unit="step", dynamic_ncols=True)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch_seeds = list(seeds[start : start + batch_size])
            gens = make_generators(batch_seeds, device)
            x = randn_like(torch.empty((len(batch_seeds), *shape), device=device), gens)
            y = None if labels is None else labels[start : start + len(batch_seeds)].to(device)

            def step_cb(i, x_t, x0, _start=start, _b=len(batch_seeds)):
                bar.update(_b)
                if callback is not None:
                    callback(_start, n, i, len(timesteps))

            x0 = fn(denoiser, x, schedule, timesteps, y=y, generator=gens, callback=step_cb, **opts)
            x0 = x0.float()
            out.append((x0.clamp(-1, 1) if clamp else x0).cpu())
    bar.close()
    return torch.cat(out)
