"""The training set in latent space: cached VAE posteriors and the scale factor (LDM sec. 3, 4.3.2).

Training (``difforge train --latent --vae FILE``):

1. every training image (and its mirror image when ``hflip`` is on: a conv encoder is not
   flip-equivariant, so flip(E(x)) != E(flip(x))) goes through the frozen encoder **once**; the
   posterior parameters (mean, std) are kept in RAM and, with ``latent_cache``, in the run folder
   (``latents/<vae hash>-<data hash>.safetensors``), so a resumed run encodes nothing;
2. the scale factor s = 1 / std(z) over the whole set makes s * z unit-variance, as the noise
   schedule assumes (LDM's "rescaling the latent space"); with z = mean + std * eps it is exact:
   Var(z) = E[mean^2 + std^2] - E[mean]^2 over all elements;
3. each step draws a fresh posterior sample z = mean + std * eps (from the step's generator) and
   the network learns to denoise s * z.

The model file links the VAE (:meth:`difforge.codec.LatentCodec.link`); the network's default
levels are fitted to the small latent by :func:`difforge.models.registry.fit_levels`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_write
from ..codec import LatentCodec, load_vae
from ..errors import ConfigError
from ..modelfile import file_sha256
from ..models import registry
from ..models.vae import AutoencoderKL

ENCODE_BATCH = 64


@torch.inference_mode()
def encode_images(vae: AutoencoderKL, images: torch.Tensor, device: torch.device, hflip: bool,
                  batch_size: int = ENCODE_BATCH) -> Dict[str, torch.Tensor]:
    """uint8 (N, C, H, W) -> {"mean", "std"}: float32 (V, N, c, h, w) on the CPU, V = 2 with ``hflip``
    (index 1: the posterior of the mirrored image). Each image goes through the encoder once per view."""
    views = [False, True] if hflip else [False]
    means, stds = [], []
    for flipped in views:
        m, s = [], []
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device).float().div_(127.5).sub_(1.0)
            post = vae.encode(x.flip(-1) if flipped else x)
            m.append(post.mean.float().cpu())
            s.append(post.std.float().cpu())
        means.append(torch.cat(m))
        stds.append(torch.cat(s))
    return {"mean": torch.stack(means), "std": torch.stack(stds)}


def scale_factor(mean: torch.Tensor, std: torch.Tensor) -> float:
    """1 / std(z) over every element, z = mean + std * eps: Var z = E[mean^2 + std^2] - (E mean)^2."""
    m, s = mean.double(), std.double()
    var = (m.pow(2) + s.pow(2)).mean() - m.mean().pow(2)
    if not math.isfinite(var.item()) or var.item() <= 0:
        raise ConfigError("the VAE's latents of this data set have no variance; is the VAE trained?")
    return float(1.0 / var.sqrt())


def _data_hash(images: torch.Tensor, hflip: bool) -> str:
    h = hashlib.sha256(str((tuple(images.shape), hflip)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


class LatentTraining:
    """The latent side of a diffusion run: codec, cached posteriors, network sizing, the model-file link."""

    def __init__(self, codec: LatentCodec, cache: Dict[str, torch.Tensor], image_size: int, hflip: bool):
        self.codec = codec
        self.mean, self.std = cache["mean"], cache["std"]
        self.image_size = image_size
        self.hflip = hflip
        self.shape = codec.latent_shape(image_size)

    @classmethod
    def prepare(cls, config, data, device: torch.device, main: bool = True, log=None) -> "LatentTraining":
        """Load the VAE named by ``config.latent.vae``, check it fits the data, encode (or load) the set."""
        dc, lc = config.data, config.latent
        path = Path(lc.vae)
        if not path.is_file():
            raise ConfigError(f"VAE file {path} does not exist (vae / --vae); train one with `difforge train-vae`")
        vae, meta = load_vae(path, device)
        if vae.in_channels != dc.channels:
            raise ConfigError(f"the VAE {path} encodes {vae.in_channels}-channel images, but the data has channels={dc.channels}; "
                              f"use --channels {vae.in_channels} or a VAE trained on {dc.channels}-channel images")
        try:
            vae.check_image_size(dc.image_size, vae.config)
        except ConfigError as e:
            raise ConfigError(f"--image-size is in pixels: {e}") from None
        sha = file_sha256(path)
        cache_file = None
        if lc.latent_cache:
            cache_file = Path(config.train.runs_dir) / config.train.run / "latents" / f"{sha[:16]}-{_data_hash(data.images, dc.hflip)[:16]}.safetensors"
        cache = _load_cache(cache_file)
        if cache is None:
            if log:
                log.info(f"encoding {len(data.images)} images{' and their mirror images' if dc.hflip else ''} with the VAE {path} (once)")
            cache = encode_images(vae, data.images, device, dc.hflip)
            if cache_file is not None and main:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(cache_file) as tmp:
                    save_file({k: v.contiguous() for k, v in cache.items()}, str(tmp))
        elif log:
            log.info(f"latents of {len(data.images)} images read from {cache_file}")
        codec = LatentCodec(vae, scale_factor(cache["mean"], cache["std"]), path, sha)
        return cls(codec, cache, dc.image_size, dc.hflip)

    # -- per step ----------------------------------------------------------------------------
    def inputs(self, idx: torch.Tensor, flip: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows ``idx`` (mirrored where ``flip``) as mean and std stacked on channels: (B, 2c, h, w)."""
        view = flip.long() if self.hflip else torch.zeros_like(idx)
        return torch.cat([self.mean[view, idx], self.std[view, idx]], dim=1).to(device, non_blocking=True)

    def sample(self, x: torch.Tensor, g: torch.Generator, mine: slice, global_batch: int) -> torch.Tensor:
        """s * (mean + std * eps), eps drawn for the global batch from ``g`` (this rank keeps ``mine``)."""
        mean, std = x.float().chunk(2, dim=1)
        eps = torch.randn((global_batch, *mean.shape[1:]), generator=g)[mine].to(x.device)
        return (mean + std * eps) * self.codec.scale_factor

    # -- the network -------------------------------------------------------------------------
    def network_options(self, name: str, options: Dict[str, Any], user_options: Dict[str, Any], log=None) -> Dict[str, Any]:
        """``options`` for the latent: image_size / in_channels of z, default levels fitted to its size."""
        c, size, _ = self.shape
        opts = dict(options, image_size=size, in_channels=c)
        fitted = registry.fit_levels(name, opts, user_options)
        if fitted is not opts and log:
            mn = registry.MIN_LATENT_RES
            log.info(f"{name}: channel_mult {fitted['channel_mult']} for the {size}x{size} latent (levels stop at {mn}x{mn})")
        try:
            registry.check_image_size(name, fitted, fitted["image_size"])
        except ConfigError as e:
            raise ConfigError(self._size_message(name, options, user_options, str(e))) from None
        return fitted

    def _size_message(self, name: str, options, user_options, error: str) -> str:
        f = self.codec.vae.downsample
        px = self.image_size
        works = [p for p in _pixel_candidates(px, f)
                 if registry.fits(name, dict(options, image_size=p // f, in_channels=self.shape[0]), user_options)]
        low = max((p for p in works if p < px), default=None)
        high = min((p for p in works if p > px), default=None)
        sizes = " or ".join(f"{p}" for p in (low, high) if p) or "none near it"
        return (f"image size {px} px with the {f}x VAE gives a {px // f}x{px // f} latent, but {error}; "
                f"image sizes that work: {sizes} px (or set the network's levels, e.g. --channel-mult)")

    def link(self, model_dir: Path) -> Dict[str, Any]:
        """The model file's ``latent`` entry (``model_dir``: where the model files are written)."""
        return self.codec.link(model_dir, self.image_size)


def _pixel_candidates(px: int, f: int, span: int = 16) -> List[int]:
    base = (px // f) * f
    return [p for p in range(base - span * f, base + (span + 1) * f, f) if p >= f]


def _load_cache(path: Optional[Path]) -> Optional[Dict[str, torch.Tensor]]:
    if path is None or not path.is_file():
        return None
    try:
        d = load_file(str(path))
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    return d if set(d) == {"mean", "std"} else None


__all__ = ["ENCODE_BATCH", "LatentTraining", "encode_images", "scale_factor"]
