"""Bits/dim of held-out images under a model's variational bound (what ``difforge nll`` reports).

The full bound evaluates every one of the T terms (T network calls per batch), plus the prior KL
and the discretised decoder at t = 0: the upper bound on -log2 p(x) / dims that improved-diffusion
reports. ``timesteps=K`` estimates the sum of the T - 1 KL terms from K - 1 of them by stratified
importance sampling, unbiased, with a standard error against the full value on the same images
(:mod:`difforge.diffusion.likelihood_estimate`). Without a data folder the built-in defect set is
drawn at the model's size with a seed training does not use by default.

Precision: the network may run in bf16 (the pipeline's precision) for eps- and v-predicting
models. An eps error d moves the posterior mean by beta_t d / (sqrt(alpha_t) sqrt(1 - ab_t)), so a
relative error u (bf16: 2^-8 per rounding, ~1e-2 through a network) changes term t's KL by about
beta_t u^2 / (2 (1 - ab_t)) nats per dimension (sigma_t^2 = beta_t); beta_t / (1 - ab_t) falls like
1/t, so the sum over t is about u^2 ln(T) / 2: under 1e-3 bits/dim (v prediction: the same to first
order; the decoder's x0 error is sqrt(1 - ab_1) u, far below its bin width). An x0-predicting
network's error enters the mean unscaled (u^2 / (2 beta_t) per dimension, ~0.5 nats near t = 1), so
those models run in fp32 whatever the pipeline's precision.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

from ..errors import UserError

HELD_OUT_SEED = 1000  # training's built-in set uses seed 0 unless told otherwise


def held_out_images(pipe, data: Optional[str], num: int, builtin_seed: int = HELD_OUT_SEED, progress: bool = True):
    """(uint8 images, labels or None, description): ``num`` images of ``data`` (default: the
    built-in set), labelled with the model's classes where their names match, else the null class."""
    import torch

    from ..config import DataConfig
    from ..data.source import load_training_images

    per_class = max(1, math.ceil(num / 4))  # the built-in set has 4 classes
    dc = DataConfig(data=data, image_size=pipe.image_size, channels=pipe.channels, hflip=False,
                    builtin_per_class=per_class, builtin_seed=builtin_seed)
    found = load_training_images(dc, progress=progress)
    pick = torch.randperm(len(found.images), generator=torch.Generator().manual_seed(0))[:num]
    images = found.images[pick]
    labels, how = None, "unconditional"
    if pipe.num_classes:
        known = found.labels is not None and all(name in pipe.class_names for name in found.class_names)
        if known:
            remap = torch.tensor([pipe.class_names.index(name) for name in found.class_names])
            labels, how = remap[found.labels[pick]], "conditioned on their classes"
        else:
            labels, how = torch.full((len(images),), pipe.num_classes), "with the null class (no matching class folders)"
    return images, labels, f"{len(images)} images from {found.source}, {how}"


def held_out_bits_per_dim(pipe, data: Optional[str] = None, *, num: int = 128, batch_size: int = 32,
                          variance: Optional[str] = None, clip_x0: bool = True, builtin_seed: int = HELD_OUT_SEED,
                          seed: int = 0, progress: bool = True, timesteps: Optional[int] = None) -> Dict[str, Any]:
    """The report of a loaded pipeline on held-out images: bits/dim, its standard error and its parts.

    ``variance``: learned, fixed_small or fixed_large (default: learned if the model learned it,
    else fixed_large, improved-diffusion's default). ``timesteps``: K network calls per batch for
    the estimate (None, or K >= T: the full bound); the report's ``timestep_std_error`` is the
    estimate's standard error against the full value on the same images (0 when exact), and
    ``std_error`` the spread over images as before.
    """
    from ..diffusion.likelihood_estimate import dataset_bits_per_dim
    from ..runtime import autocast_factory

    if num < 1 or batch_size < 1:
        raise UserError("--num and --batch-size must be at least 1")
    if pipe.codec is not None:
        raise UserError(f"{pipe.source} is a latent diffusion model: its likelihood is of VAE latents, so pixel bits/dim is not defined for it")
    if variance == "learned" and not pipe.learn_sigma:
        raise UserError(f"{pipe.source} was trained without learn_sigma; use --variance fixed_large or fixed_small")
    variance = variance or ("learned" if pipe.learn_sigma else "fixed_large")
    if timesteps is not None and timesteps < 2:
        raise UserError(f"--timesteps must be at least 2 (the decoder and one KL term), got {timesteps}")
    images, labels, source = held_out_images(pipe, data, num, builtin_seed, progress)
    denoiser = pipe.denoiser(cfg=1.0, clip_x0=clip_x0)
    precision = pipe.precision
    if precision != "fp32" and pipe.target == "x0":  # see the module docstring
        precision = "fp32"
        denoiser = denoiser.with_options(autocast=autocast_factory("fp32", pipe.device))
    steps = pipe.schedule.num_steps
    k = steps if timesteps is None else min(int(timesteps), steps)
    out = dataset_bits_per_dim(denoiser, images, labels, batch_size=batch_size, variance=variance,
                               seed=seed, device=pipe.device, progress=progress, timesteps=k)
    n = len(images)
    total = out["total"]
    t_se = out["kl_var"].sum().sqrt().item() / n if "kl_var" in out else 0.0
    return {
        "model": pipe.source,
        "data": source,
        "diffusion_steps": steps,
        "timesteps": k,
        "exact": k == steps,
        "precision": precision,
        "variance": variance,
        "bits_per_dim": total.mean().item(),
        "std_error": total.std().item() / math.sqrt(n) if n > 1 else float("nan"),
        "timestep_std_error": t_se,
        "prior_bits_per_dim": out["prior"].mean().item(),
        "decoder_bits_per_dim": out["decoder"].mean().item(),
        "kl_terms_bits_per_dim": out["kl"].mean().item(),
    }
