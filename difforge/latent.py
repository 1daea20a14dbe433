"""Latent diffusion: a frozen VAE around the data (Rombach et al. 2022, sec. 3 and 4.3.2).

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

The model file links its VAE: ``meta["latent"]`` holds the VAE's path (absolute, and relative to
the model file), its sha256, the scale factor and the latent shape, while ``data.image_size``
stays in pixels. :func:`load_codec` finds the VAE again (or takes ``--vae``), checks the hash and
gives the :class:`LatentCodec` the pipeline decodes with.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .errors import CheckpointError, ConfigError
from .models.vae import AutoencoderKL, build_vae

MIN_LATENT_RES = 4  # default network levels stop halving at a 4x4 feature map
ENCODE_BATCH = 64


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_vae_kind(path) -> None:
    """CheckpointError unless ``path`` is a VAE model file."""
    from .train.checkpoint import read_metadata

    kind = read_metadata(path).get("kind", "diffusion")
    if kind != "vae":
        raise CheckpointError(f"{path} is a {kind} model file, not a VAE; give a file written by `difforge train-vae`")


def load_vae(path, device: torch.device = torch.device("cpu")) -> Tuple[AutoencoderKL, Dict[str, Any]]:
    """A VAE model file -> (frozen VAE in eval mode on ``device``, its metadata)."""
    from .train.checkpoint import load_model_file, load_weights_into

    read_vae_kind(path)
    tensors, meta = load_model_file(path)
    try:
        vae = build_vae(meta["network"]["name"], **meta["network"]["config"])
    except KeyError as e:
        raise CheckpointError(f"{path} lacks the {e} entry of a difforge VAE description") from None
    load_weights_into(vae, tensors, path)
    return vae.to(device).eval().requires_grad_(False), meta


@dataclass
class LatentCodec:
    """A frozen VAE and the scale factor: pixels in [-1, 1] <-> the scaled latents a network sees."""

    vae: AutoencoderKL
    scale_factor: float
    path: Path
    sha256: str

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def latent_shape(self, image_size: int) -> tuple:
        return self.vae.latent_shape(image_size)

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (B, C, H, W) in [-1, 1] -> scaled posterior means s * E(x) (for image interpolation)."""
        return self.vae.encode(x.to(self.device)).mode() * self.scale_factor

    @torch.inference_mode()
    def decode(self, z: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Scaled latents -> pixels in [-1, 1] (float, on z's device): D(z / s), clamped."""
        out = [self.vae.decode(z[i : i + batch_size].to(self.device).float() / self.scale_factor) for i in range(0, len(z), batch_size)]
        return torch.cat(out).float().clamp(-1.0, 1.0).to(z.device)


# -- the training set in latent space ----------------------------------------------------------
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
                from safetensors.torch import save_file

                from .atomic import atomic_write

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
        fitted = fit_levels(name, opts, user_options)
        if fitted is not opts and log:
            log.info(f"{name}: channel_mult {fitted['channel_mult']} for the {size}x{size} latent (levels stop at {MIN_LATENT_RES}x{MIN_LATENT_RES})")
        try:
            _check(name, fitted)
        except ConfigError as e:
            raise ConfigError(self._size_message(name, options, user_options, str(e))) from None
        return fitted

    def _size_message(self, name: str, options, user_options, error: str) -> str:
        f = self.codec.vae.downsample
        px = self.image_size
        works = [p for p in _pixel_candidates(px, f) if _fits(name, dict(options, image_size=p // f, in_channels=self.shape[0]), user_options)]
        low = max((p for p in works if p < px), default=None)
        high = min((p for p in works if p > px), default=None)
        sizes = " or ".join(f"{p}" for p in (low, high) if p) or "none near it"
        return (f"image size {px} px with the {f}x VAE gives a {px // f}x{px // f} latent, but {error}; "
                f"image sizes that work: {sizes} px (or set the network's levels, e.g. --channel-mult)")

    def link(self, model_dir: Path) -> Dict[str, Any]:
        """The model file's ``latent`` entry (``model_dir``: where the model files are written)."""
        vae_abs = self.codec.path.resolve()
        try:
            rel = os.path.relpath(vae_abs, Path(model_dir).resolve())
        except ValueError:  # another drive (Windows)
            rel = None
        c, h, w = self.shape
        return {
            "vae_path": str(vae_abs),
            "vae_relpath": rel,
            "vae_sha256": self.codec.sha256,
            "scale_factor": self.codec.scale_factor,
            "latent_channels": c,
            "latent_size": h,
            "downsample": self.codec.vae.downsample,
        }


def _load_cache(path: Optional[Path]) -> Optional[Dict[str, torch.Tensor]]:
    if path is None or not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        d = load_file(str(path))
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    return d if set(d) == {"mean", "std"} else None


# -- network levels for a latent -----------------------------------------------------------------
def _check(name: str, options: Dict[str, Any]) -> None:
    from .models import registry

    registry.check_image_size(name, options, options["image_size"])


def _fits(name: str, options: Dict[str, Any], user_options: Dict[str, Any]) -> bool:
    try:
        _check(name, fit_levels(name, options, user_options))
        return True
    except ConfigError:
        return False


def _pixel_candidates(px: int, f: int, span: int = 16) -> List[int]:
    base = (px // f) * f
    return [p for p in range(base - span * f, base + (span + 1) * f, f) if p >= f]


def fit_levels(name: str, options: Dict[str, Any], user_options: Dict[str, Any]) -> Dict[str, Any]:
    """Trim the network's *default* ``channel_mult`` so its levels fit ``options["image_size"]``.

    A latent is small (64 px through an 8x VAE is 8x8), so default levels made for pixels would
    halve it to 1x1 or not divide it at all. Keep the first k levels, k the largest with the
    lowest feature map still >= MIN_LATENT_RES and an exact division. Levels the user set
    (``channel_mult`` in ``user_options``) are kept as they are; networks without levels (DiT)
    are returned unchanged. Returns ``options`` itself when nothing changes.
    """
    from .models import registry

    if "channel_mult" in user_options:
        return options
    defaults = registry.options(name)
    if "channel_mult" not in defaults:
        return options
    mult = options.get("channel_mult", defaults["channel_mult"])
    if mult is None:  # resolved per image size by the network (adm): ask it
        try:
            mult = registry.build(name, **options).config["channel_mult"]
        except ConfigError:
            return options
    size = int(options["image_size"])
    k = 1
    for levels in range(1, len(mult) + 1):
        div = 2 ** (levels - 1)
        if size % div == 0 and size // div >= min(MIN_LATENT_RES, size):
            k = levels
    if k == len(mult):
        return options
    trimmed = dict(options, channel_mult=list(mult[:k]))
    try:
        _check(name, trimmed)
    except ConfigError:
        return options
    return trimmed


# -- finding the VAE of a model file -----------------------------------------------------------
def load_codec(link: Dict[str, Any], model_path, override=None, device: torch.device = torch.device("cpu")) -> LatentCodec:
    """The VAE linked by a model file's ``latent`` entry, hash-checked; ``override`` (--vae) wins.

    Without ``override`` it is looked for at the recorded absolute path, then at the recorded
    path relative to the model file, then under its file name next to the model file; the first
    file whose sha256 matches is used. A file at the recorded path (or ``override``) with another
    hash is an error: decoding with another VAE gives noise, so it is never done silently.
    """
    want = link.get("vae_sha256")
    model_file = Path(model_path).resolve()
    recorded = Path(link["vae_path"])
    if override is not None:
        first, more = Path(override), []
        if not first.is_file():
            raise CheckpointError(f"VAE file {override} (--vae) does not exist")
    else:
        first, more = recorded, []
        if link.get("vae_relpath"):
            more.append(model_file.parent / link["vae_relpath"])
        more.append(model_file.parent / recorded.name)
    for i, p in enumerate([first, *more]):
        if not p.is_file() or (i > 0 and p.resolve() == model_file):
            continue
        sha = file_sha256(p)
        if want is None or sha == want:
            vae, _ = load_vae(p, device)
            return LatentCodec(vae, float(link["scale_factor"]), p, sha)
        if i == 0:
            read_vae_kind(p)
            raise CheckpointError(
                f"VAE file {p} is not the VAE {model_path} was trained with (its sha256 is {sha[:12]}..., "
                f"the model file records {want[:12]}...); give the original with --vae FILE"
            )
    raise CheckpointError(
        f"{model_path} is a latent diffusion model whose VAE {recorded} is not there any more "
        f"(nor next to the model file); give its new place with --vae FILE"
    )


__all__ = ["LatentCodec", "LatentTraining", "encode_images", "file_sha256", "fit_levels", "load_codec", "load_vae", "scale_factor"]
