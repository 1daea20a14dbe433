"""Held-out PSNR / SSIM of a super-resolution run (``train-sr --val DIR``; IDDM's ``--val_dataset_path``).

IDDM's SR trainer scores its model on a validation folder as it trains; so does this. With
``sr_val_data`` set, every ``eval_every`` steps (default: once per epoch) the EMA model upscales
the validation images' low-res versions and PSNR / SSIM of the [0, 1] images against the
originals go to metrics.csv (``val_psnr``, ``val_ssim``), to the log and into the model file
(``meta["sr_val"]``), beside bicubic up-sampling's scores on the same inputs (``val_bicubic_psnr``,
``val_bicubic_ssim``: the number to beat, computed once).

The low-res inputs are made by the run's own degradation with its noise drawn once from a fixed
seed, so every evaluation sees the same inputs and the numbers are comparable across steps and
runs. A regression upscaler scores the first ``eval_num`` images; a diffusion upsampler, whose
every image is a ``preview_steps``-step sampling, the first min(``eval_num``, :data:`DIFFUSION_MAX`)
with seed = image index. Class sub-folders of the validation folder are matched to the model's
classes by name (a class the model does not know is an error before training starts).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import torch

from ...data.degrade import Degradation, degrade, upsample
from ...errors import ConfigError
from ..logging import get_logger

DIFFUSION_MAX = 32  # validation images of a diffusion upsampler (each one is a sampling run)
VAL_NOISE_SEED = 7_300_001


class SRValidation:
    """The validation images of a super-resolution run and how the EMA model scores on them."""

    def __init__(self, config, data, deg: Degradation, dist, diffusion: bool):
        from ...data.source import load_training_images

        c = self.config = config
        dc, tc = c.data, c.train
        folder = c.sr.sr_val_data
        val = load_training_images(dataclasses.replace(dc, data=folder, channels=int(data.images.shape[1]), conditional=None),
                                      progress=False)
        if val.images.shape[-2:] != data.images.shape[-2:]:
            raise ConfigError(f"validation images of {folder} are {tuple(val.images.shape[-2:])}, training ones {tuple(data.images.shape[-2:])}")
        n = min(tc.eval_num, DIFFUSION_MAX) if diffusion else tc.eval_num
        self.images = val.images[:n]
        self.labels = self._labels(val, data, n, folder)
        self.source = f"{folder} ({len(self.images)} images)"
        self.deg = deg
        self.hr = self.images.float().div(127.5).sub(1.0)
        self.low = degrade(self.hr, deg, generator=torch.Generator().manual_seed(VAL_NOISE_SEED))
        self.baseline = scores(upsample(self.low, deg.scale), self.hr, prefix="val_bicubic_")
        if tc.eval_every == 0:  # once per epoch, as IDDM
            per_epoch = max(1, len(data.images) // (tc.batch_size * dist.world_size))
            tc.eval_every = max(1, round(per_epoch / tc.grad_accum))

    @staticmethod
    def _labels(val, data, n: int, folder) -> List[Optional[int]]:
        """The model's class index of each validation image (None: flat folder or a class-agnostic model)."""
        if val.labels is None or not data.class_names:
            return [None] * n
        unknown = sorted(set(val.class_names) - set(data.class_names))
        if unknown:
            raise ConfigError(f"validation classes {', '.join(unknown)} of {folder} are not among the training classes "
                              f"({', '.join(data.class_names)})")
        index = {name: i for i, name in enumerate(data.class_names)}
        return [index[val.class_names[int(k)]] for k in val.labels[:n]]

    def evaluate(self, up, step: int, meta: Dict, preview_steps: int) -> Dict[str, float]:
        """Upscale every validation input with ``up`` (:class:`~difforge.pipeline.upscale.Upscaler`)
        and score against the originals; the row also goes into ``meta["sr_val"]`` and the log."""
        made = []
        for i in range(len(self.low)):
            low = self.low[i : i + 1]
            if up.diffusion:
                made.append(up.upscale_tensor(low, self.labels[i] if up.class_names else None, seed=i, steps=preview_steps))
            else:
                made.append(up.upscale_tensor(low))
        row = {**scores(torch.cat(made), self.hr, prefix="val_"), **self.baseline}
        meta["sr_val"] = dict(row, step=step, images=self.source)
        get_logger().info(f"validation at step {step} on {self.source}: PSNR {row['val_psnr']:.2f} dB, SSIM {row['val_ssim']:.4f} "
                          f"(bicubic {row['val_bicubic_psnr']:.2f} dB, {row['val_bicubic_ssim']:.4f})")
        return row


def scores(made: torch.Tensor, hr: torch.Tensor, prefix: str) -> Dict[str, float]:
    """Mean PSNR (dB, capped at 100) and SSIM of [-1, 1] images as [0, 1] ones."""
    from ...metrics.image_quality import psnr, ssim

    a, b = (made.float().clamp(-1, 1) + 1) / 2, (hr.float() + 1) / 2
    s = ssim(a, b, data_range=1.0).mean().item() if min(hr.shape[-2:]) >= 11 else float("nan")
    return {f"{prefix}psnr": round(psnr(a, b, data_range=1.0).clamp(max=100.0).mean().item(), 4), f"{prefix}ssim": round(s, 5)}


__all__ = ["DIFFUSION_MAX", "SRValidation", "scores"]
