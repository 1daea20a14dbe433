"""The EMA chosen after training: a small held-out set and a fixed denoising loss on it.

A few images are split off the training data (5%, at most 64, at least 8; only when that is at
most a tenth of the data, i.e. 80 images or more) by the run's seed, so a resumed run holds out
the same ones. Training tracks several EMAs (:class:`~difforge.train.ema.EMA`
``extra`` decays and ``power`` profiles); at the end each is scored by the diffusion objective on the held-out images at fixed timesteps
(:data:`TIMESTEPS` stratified over 0..T-1) with fixed noise, and the lowest loss wins:
``ema.safetensors`` is that EMA, ``keep_all_ema`` also writes ``ema_<label>.safetensors`` for each
(``ema_0.995``, ``ema_p0.05``).
Too little data: nothing is held out and the configured EMA is kept.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..data.source import TrainingImages
from .rng import mix_seed

HOLD_OUT_FRACTION, HOLD_OUT_MAX, HOLD_OUT_MIN = 0.05, 64, 8
TIMESTEPS = 8  # per held-out image
VALIDATION = 4  # the third counter of mix_seed for the split and the scoring noise


def hold_out_count(n: int) -> int:
    """Images held out of ``n``: 5% capped at 64, at least 8, or 0 when 8 would be over 10% of the data."""
    k = min(HOLD_OUT_MAX, max(HOLD_OUT_MIN, int(round(HOLD_OUT_FRACTION * n))))
    return k if k <= n // 10 else 0


def hold_out(data: TrainingImages, seed: int) -> Tuple[TrainingImages, Optional[TrainingImages]]:
    """``(training, held_out)``: a seeded random choice that leaves every class at least 2 training
    images; ``held_out`` is None when the data is too small (:func:`hold_out_count`)."""
    n = len(data.images)
    k = hold_out_count(n)
    if not k:
        return data, None
    g = torch.Generator().manual_seed(mix_seed(seed, 0, VALIDATION))
    left = torch.bincount(data.labels) if data.labels is not None else None
    chosen = []
    for i in torch.randperm(n, generator=g).tolist():
        if left is not None:
            if left[data.labels[i]] <= 2:
                continue
            left[data.labels[i]] -= 1
        chosen.append(i)
        if len(chosen) == k:
            break
    mask = torch.ones(n, dtype=torch.bool)
    mask[chosen] = False
    val_idx = torch.tensor(sorted(chosen), dtype=torch.long)

    def part(idx, source):
        return dataclasses.replace(data, images=data.images[idx].contiguous(), source=source,
                                   labels=None if data.labels is None else data.labels[idx],
                                   masks=None if data.masks is None else data.masks[idx])

    train = part(mask, f"{data.source} ({len(chosen)} more held out to choose the EMA)")
    return train, part(val_idx, "held out")


@torch.no_grad()
def denoising_loss(task, net: torch.nn.Module, val: TrainingImages, device: torch.device, seed: int, batch: int = 64) -> float:
    """Mean diffusion loss of ``net`` on the held-out images at fixed timesteps and noise."""
    x0 = val.images.float().div(127.5).sub(1.0)
    n, T = len(x0), task.config.diffusion.diffusion_steps
    x0 = x0.repeat_interleave(TIMESTEPS, 0)
    t = ((torch.arange(TIMESTEPS) + 0.5) * T / TIMESTEPS).long().clamp(max=T - 1).repeat(n)
    y = None if val.labels is None or not task.num_classes else val.labels.repeat_interleave(TIMESTEPS, 0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(mix_seed(seed, 1, VALIDATION)))
    total = 0.0
    for s in range(0, len(x0), batch):
        sl = slice(s, s + batch)
        terms = task.objective(net, x0[sl].to(device), t[sl].to(device), noise[sl].to(device),
                               None if y is None else y[sl].to(device))
        total += float(terms["loss"].float().sum())
    return total / len(x0)


def _describe(label: str) -> str:
    return f"power-function EMA of width {label[1:]} of the run" if label.startswith("p") else f"decay {label}"


def choose_ema(trainer, step: int, epoch: float) -> Optional[torch.nn.Module]:
    """Score every tracked EMA of ``trainer`` on its held-out images, log the values and write the
    best as ``ema.safetensors`` (with ``keep_all_ema`` every one as ``ema_<label>.safetensors``).
    Returns the chosen network, or None when nothing was held out or only one EMA is tracked."""
    from ..modelfile import save_model_file

    val, tc = getattr(trainer, "val", None), trainer.config.train
    emas = trainer.ema.all()
    if val is None or not hasattr(trainer.task, "objective"):
        return None
    losses: Dict[str, float] = {k: denoising_loss(trainer.task, net, val, trainer.device, tc.seed) for k, net in emas.items()}
    order = {k: i for i, k in enumerate(emas)}  # a tie keeps the configured EMA (listed first)
    finite = {k: v for k, v in losses.items() if math.isfinite(v)}
    best = min(finite, key=lambda k: (finite[k], order[k])) if finite else next(iter(emas))
    listed = ", ".join(f"{k}: {v:.5f}" for k, v in losses.items())
    trainer.log.info(f"EMA chosen on {len(val.images)} held-out images: {_describe(best)} "
                     f"(held-out loss by EMA, p = power-function width: {listed})")

    def train_meta(label):
        profile = {"ema_sigma_rel": float(label[1:])} if label.startswith("p") else {"ema_decay": float(label)}
        return {"step": step, "epoch": epoch, "run": tc.run, "ema": label, **profile, "held_out_loss": losses}

    meta = dict(trainer.model_meta, train=train_meta(best), weights="ema")
    cdir = Path(trainer.run_dir) / "checkpoints"
    save_model_file(cdir / "ema.safetensors", emas[best].state_dict(), meta)
    if tc.keep_all_ema:
        for k, net in emas.items():
            save_model_file(cdir / f"ema_{k}.safetensors", net.state_dict(), dict(meta, train=train_meta(k)))
    return emas[best]


__all__ = ["hold_out", "hold_out_count", "denoising_loss", "choose_ema"]
