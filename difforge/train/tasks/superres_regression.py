"""Training the fast regression upscaler (``train.task = sr-regression``; ``difforge train-sr --objective regression``).

IDDM's ``srv1`` recipe on the shared loop: the network (``rdn-sr``, alias ``srv1``:
:mod:`difforge.models.srnet`) maps the degraded low-res image z = degrade(x)
(:mod:`difforge.data.degrade`, made on the fly) straight to the high-res x, trained with the
per-image mean ``l1`` or ``mse`` (the config's ``loss``; IDDM uses MSE) over its C*H*W values. No
classes: the upscaler is class-agnostic (a cascade passes the class only to diffusion models).

Per-sample terms (metrics.csv): ``loss`` and ``psnr`` (dB of the [0, 1] images, logged only).
With ``sr_val_data`` the held-out PSNR / SSIM (:mod:`~difforge.train.tasks.sr_validation`).
The model file has ``kind: upscaler`` with ``meta["inputs"]["low_res"]`` like an upsampler's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

from ...config import ModelConfig
from ...data.degrade import degrade
from ...errors import ConfigError
from ...models import registry
from ..batches import Batch
from ..rng import StepRNG
from .base import Snapshot, Task
from .sr_validation import SRValidation
from .superres import check_sizes, degradation_of, low_res_inputs

UPSCALERS = ("rdn-sr", "srv1")


class RegressionSRTask(Task):
    """Train an ``upscaler`` network by L1 / MSE to the high-res image."""

    name = "sr-regression"

    def check_data(self, data) -> None:
        c = self.config
        if c.model.network == ModelConfig.network:  # the diffusion default: this task's default is rdn-sr
            c.model.network = "rdn-sr"
        if registry.kind_of(c.model.network) != "upscaler":
            raise ConfigError(f"regression super-resolution trains an upscaler network ({', '.join(registry.available('upscaler'))}), "
                              f"not {c.model.network!r}")
        if c.diffusion.loss not in ("l1", "mse"):
            raise ConfigError(f"loss={c.diffusion.loss!r}: regression super-resolution trains with l1 or mse")
        check_sizes(c)

    def build(self, data, device: torch.device) -> torch.nn.Module:
        c = self.config
        self.deg = degradation_of(c)
        options = dict(c.model.network_options)
        for key in ("in_channels", "scale"):
            if key in options:
                raise ConfigError(f"set {key} with its own setting (--{'channels' if key == 'in_channels' else key}), not as a network option")
        net = registry.build(c.model.network, in_channels=int(data.images.shape[1]), scale=self.deg.scale, **options)
        self.meta = {
            "kind": "upscaler",
            "network": {"name": net.arch, "config": net.config},
            "regression": {"loss": c.diffusion.loss},
            "data": {"image_size": c.data.image_size, "channels": int(data.images.shape[1]), "class_names": []},
            "inputs": low_res_inputs(self.deg, 0.0),
        }
        self.validation = SRValidation(c, data, self.deg, self.dist, diffusion=False) if c.sr.sr_val_data else None
        return net.to(device)

    def loss(self, net, batch: Batch, rng: StepRNG) -> Dict[str, torch.Tensor]:
        x = batch.x
        shape = (x.shape[1], x.shape[-2] // self.deg.scale, x.shape[-1] // self.deg.scale)
        z = degrade(x.float(), self.deg, noise=rng.randn(shape, x.device) if self.deg.noise > 0 else None).to(x.dtype)
        diff = net(z).float() - x.float()
        mse = diff.pow(2).flatten(1).mean(1)
        per = mse if self.config.diffusion.loss == "mse" else diff.abs().flatten(1).mean(1)
        psnr = 10.0 * torch.log10(1.0 / (mse.detach() / 4.0).clamp_min(1e-10))  # [0, 1] images: MSE / 4
        return {"loss": per, "psnr": psnr}

    def preview(self, snapshot: Snapshot, step: int, data) -> Optional[Path]:
        from ...pipeline.upscale import Upscaler, preview_grid

        up = Upscaler(snapshot.net, snapshot.meta, snapshot.device, snapshot.precision)
        tc = self.config.train
        return preview_grid(up, data, self.deg, tc, snapshot.samples_dir / f"step_{step:07d}.{tc.image_format}")

    def evaluate(self, snapshot: Snapshot, step: int, data) -> Dict[str, float]:
        from ...pipeline.upscale import Upscaler

        if self.validation is None:
            return {}
        up = Upscaler(snapshot.net, snapshot.meta, snapshot.device, snapshot.precision)
        return self.validation.evaluate(up, step, self.meta, self.config.train.preview_steps)

    def describe(self) -> str:
        d = self.deg
        val = f"; validation on {self.validation.source} every {self.config.train.eval_every} steps" if self.validation else ""
        return f"x{d.scale} regression upscaler {self.config.model.network}, {self.config.diffusion.loss} loss, {d.down} down{val}"


__all__ = ["RegressionSRTask", "UPSCALERS"]
