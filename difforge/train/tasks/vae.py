"""Training a VAE with the shared loop (``train.task = vae``; ``difforge train-vae``).

Per image, with D = C*H*W pixel values and z ~ q(z|x) drawn by reparametrisation:

    loss = rec(x, D(z)) + kl_weight * KL(q(z|x) || N(0, I)) / D

rec is the mean squared (or absolute) error over the D values. Dividing the KL (a sum over the
latent) by D puts both terms per pixel value, as IDDM's ``mse_kl`` loss does, so the default
kl_weight 1e-4 means the same there and here. A small weight gives a near-deterministic
autoencoder whose latent space is still smooth and centred (LDM's "KL-reg", sec. 3.1).

Every ``eval_every`` steps (default: once per epoch) the EMA weights reconstruct the validation
images from their posterior means; PSNR, SSIM (on [0, 1] images, :mod:`difforge.metrics.image_quality`)
and the MSE (on the [-1, 1] scale of the loss) go to metrics.csv as ``val_psnr``, ``val_ssim``,
``val_mse`` and into the model file. Per-sample training terms (metrics.csv columns): ``loss``, ``recon`` (the
reconstruction error per pixel value) and ``kl`` (KL(q(z|x) || N(0, I)) in nats per image).
Validation images: ``val_data``; without it, fresh built-in
images (another seed) for the built-in set, or else the training images themselves.
Previews: the validation inputs on the top row, their reconstructions below.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Optional

import torch

from ...config import ModelConfig
from ...errors import ConfigError
from ...models.vae import VAE_ARCHS, AutoencoderKL, build_vae
from ..batches import Batch
from ..logging import get_logger
from ..rng import StepRNG
from .base import Snapshot, Task

VAL_BATCH = 64
BUILTIN_VAL_SEED = 1_000_003  # added to builtin_seed: validation images the VAE never trains on
BUILTIN_VAL_PER_CLASS = 16


class VAETask(Task):
    """Train :class:`~difforge.models.vae.AutoencoderKL` (network ``vae``) to reconstruct the images."""

    name = "vae"

    def check_data(self, data) -> None:
        c = self.config
        if c.model.network == ModelConfig.network:  # the diffusion default: this task's default is the VAE
            c.model.network = "vae"
        if c.model.network not in VAE_ARCHS:
            raise ConfigError(f"task vae trains an autoencoder: network must be one of {', '.join(VAE_ARCHS)}, got {c.model.network!r}")
        AutoencoderKL.check_image_size(c.data.image_size, {"downsample": c.latent.downsample})

    def build(self, data, device: torch.device) -> torch.nn.Module:
        c = self.config
        dc, mc, lc, tc = c.data, c.model, c.latent, c.train
        options = dict(mc.network_options)
        for key in ("in_channels", "latent_channels", "downsample"):
            if key in options:
                raise ConfigError(f"set {key} with its own setting (--{key.replace('_', '-')}), not as a network option")
        vae = build_vae(mc.network, in_channels=int(data.images.shape[1]), latent_channels=lc.latent_channels, downsample=lc.downsample, **options)
        if tc.eval_every == 0:  # validate once per epoch
            per_epoch = max(1, len(data.images) // (tc.batch_size * self.dist.world_size))
            tc.eval_every = max(1, round(per_epoch / tc.grad_accum))
        self.val_images, self.val_source = self._validation_images(data)
        self.meta = {
            "kind": "vae",
            "network": {"name": mc.network, "config": vae.config},
            "vae": {"kl_weight": lc.kl_weight, "recon_loss": lc.recon_loss, "validation": self.val_source},
            "data": {"image_size": dc.image_size, "channels": int(data.images.shape[1]), "class_names": []},
        }
        return vae.to(device)

    def _validation_images(self, data):
        """uint8 (N, C, H, W) validation images and where they come from."""
        from ...data.source import load_training_images

        c = self.config
        dc, lc = c.data, c.latent
        if lc.val_data:
            val = load_training_images(dataclasses.replace(dc, data=lc.val_data, conditional=False), progress=False)
            return val.images, str(lc.val_data)
        if dc.data is None:
            fresh = dataclasses.replace(dc, builtin_seed=dc.builtin_seed + BUILTIN_VAL_SEED,
                                        builtin_per_class=min(dc.builtin_per_class, BUILTIN_VAL_PER_CLASS))
            val = load_training_images(fresh, progress=False)
            return val.images, f"built-in defect dataset, seed {fresh.builtin_seed} ({len(val.images)} images)"
        return data.images[: c.train.eval_num], "the training images (no val_data / --val given)"

    def loss(self, net, batch: Batch, rng: StepRNG) -> Dict[str, torch.Tensor]:
        lc = self.config.latent
        f, x = lc.downsample, batch.x
        noise = rng.randn((lc.latent_channels, x.shape[-2] // f, x.shape[-1] // f), x.device)
        recon, posterior = net(x, noise)
        diff = recon.float() - x.float()
        err = diff.pow(2) if lc.recon_loss == "mse" else diff.abs()
        rec, kl = err.flatten(1).mean(dim=1), posterior.kl()
        return {"loss": rec + lc.kl_weight * kl / x[0].numel(), "recon": rec.detach(), "kl": kl.detach()}

    # -- evaluation and previews ----------------------------------------------------------------
    @torch.inference_mode()
    def reconstruct(self, snapshot: Snapshot, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> EMA reconstructions from the posterior means, float in [-1, 1] (CPU)."""
        vae = snapshot.net
        vae.eval()
        out = []
        for i in range(0, len(images), VAL_BATCH):
            x = images[i : i + VAL_BATCH].to(snapshot.device).float().div(127.5).sub(1.0)
            with snapshot.autocast():
                out.append(vae(x)[0].float().clamp(-1.0, 1.0).cpu())
        return torch.cat(out)

    def evaluate(self, snapshot: Snapshot, step: int, data) -> Dict[str, float]:
        from ...metrics.image_quality import psnr, ssim

        x = self.val_images.float().div(127.5).sub(1.0)
        r = self.reconstruct(snapshot, self.val_images)
        x01, r01 = (x + 1) / 2, (r + 1) / 2
        row = {
            "val_psnr": round(psnr(r01, x01, data_range=1.0).clamp(max=100.0).mean().item(), 4),
            "val_ssim": round(ssim(r01, x01, data_range=1.0).mean().item(), 5) if min(x.shape[-2:]) >= 11 else float("nan"),
            "val_mse": round((r - x).pow(2).mean().item(), 6),
        }
        self.meta["vae"]["val"] = dict(row, step=step)
        get_logger().info(f"validation at step {step}: PSNR {row['val_psnr']:.2f} dB, SSIM {row['val_ssim']:.4f}, MSE {row['val_mse']:.5f}")
        return row

    def preview(self, snapshot: Snapshot, step: int, data) -> Optional[Path]:
        from ...data.io import make_grid, save_image, to_uint8

        tc = self.config.train
        images = self.val_images[: tc.preview_num]
        recon = to_uint8(self.reconstruct(snapshot, images))
        grid = make_grid(torch.cat([images.permute(0, 2, 3, 1), recon]).numpy(), nrow=len(images))
        return save_image(grid, snapshot.samples_dir / f"step_{step:07d}.{tc.image_format}")

    def describe(self) -> str:
        lc, dc = self.config.latent, self.config.data
        s = dc.image_size // lc.downsample
        return (f"VAE to {lc.latent_channels}x{s}x{s} latents ({lc.downsample}x downsampling), "
                f"{lc.recon_loss} + {lc.kl_weight:g} x KL per pixel value; validation on {self.val_source}, every {self.config.train.eval_every} steps")


__all__ = ["VAETask"]
