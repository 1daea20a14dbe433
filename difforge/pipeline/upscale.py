"""Upscale images of any size with a super-resolution model file; the cascade after a base model.

    up = Upscaler.from_checkpoint("runs/sr/checkpoints/ema.safetensors", pipeline_cls=Pipeline)
    big = up.upscale([img])              # uint8 (h, w, C) arrays in, (s h, s w, C) arrays out
    big = up.upscale([img], steps=25, noise_level=0.1, tile=16, overlap=4, seed=0)   # an upsampler
    out = pipe.generate(8, "scratch", upscale=up)   # the cascade: generate at the base size, then upscale

Two kinds of file: a regression upscaler (``kind: upscaler``, ``train-sr --objective regression``:
one forward pass) and a diffusion upsampler (a diffusion file with ``inputs.low_res``,
``train-sr``: sampled through :meth:`Pipeline.sample_batches` with the up-sampled low-res image
fixed as its extra input channels, :class:`~difforge.diffusion.superres.LowResConditionedNet`; a
residual upsampler's samples are k (x - bicubic(z)), which its
:class:`~difforge.diffusion.superres.ResidualCodec` turns into pixels).

Any input size: the image is cut into overlapping tiles blended without seams
(:mod:`difforge.pipeline.tiling`); an image smaller than a tile is edge-padded and the padding
cropped off, so an h x w input always gives exactly s h x s w. A diffusion upsampler samples
square tiles (default: its training low-res size, where it saw its data); a regression upscaler
takes the whole image up to :data:`WHOLE_MAX` low-res pixels a side, else tiles of :data:`AUTO_TILE`.
Image i of a call uses seed ``seed + i``; its tile k seeds ``seed + i + TILE_SEED_STRIDE * k``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.degrade import Degradation, downsample, upsample
from ..diffusion.superres import LowResConditionedNet, ResidualCodec, level_features, noise_low_res
from ..errors import CheckpointError, UserError
from ..modelfile import build_network, check_meta, load_model_file
from ..runtime import autocast_factory, resolve_device, resolve_precision
from .config import SampleConfig
from .tiling import count_tiles, tiled

WHOLE_MAX = 128  # a regression upscaler takes images up to this many low-res pixels a side in one pass
AUTO_TILE = 96  # else tiles of this size (low-res pixels) ...
AUTO_OVERLAP = 8  # ... sharing this many
TILE_SEED_STRIDE = 100_003
UPSCALE_SAMPLING = SampleConfig(cfg=1.0)  # the upsampler is conditioned on an image: no guidance by default
LINKED = "linked"  # upscale with the upsampler a cascade run's model file names (Pipeline.generate's default)


@dataclass(frozen=True)
class Fit:
    """Why a base model and an upscaler do (not) fit: ``problem`` is None when they do."""

    problem: Optional[str]


class Upscaler:
    """A loaded super-resolution model: ``upscale`` images of any size by its ``scale``."""

    def __init__(self, net: torch.nn.Module, meta: Dict[str, Any], device: torch.device, precision: str = "fp32", source: str = "", pipe=None):
        self.net = net.eval().requires_grad_(False)
        self.meta, self.device, self.precision, self.source, self.pipe = meta, device, precision, source, pipe
        low = (meta.get("inputs") or {}).get("low_res") or {}
        self.degradation = Degradation.from_dict(low.get("degradation") or {"scale": low.get("scale", 4)})
        self.scale = self.degradation.scale
        self.noise_aug = low.get("noise_aug")
        self.residual = float(low["residual"]["scale"]) if low.get("residual") else None  # k of a residual upsampler
        data = meta["data"]
        self.image_size, self.channels = int(data["image_size"]), int(data["channels"])
        self.class_names: List[str] = list(data.get("class_names") or [])
        self.diffusion = pipe is not None

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", precision: Optional[str] = None, pipeline_cls=None) -> "Upscaler":
        """A regression upscaler (``kind: upscaler``) or a diffusion upsampler file; anything else is refused.
        A diffusion upsampler loads through ``pipeline_cls`` (:class:`difforge.pipeline.Pipeline`)."""
        tensors, meta = load_model_file(path)
        if not (meta.get("inputs") or {}).get("low_res"):
            raise CheckpointError(f"{path} is not a super-resolution model (no inputs.low_res in its metadata); "
                                  "train one with difforge train-sr")
        dev = resolve_device(device)
        if meta.get("kind") == "upscaler":
            net = build_network(check_meta(meta, path), tensors, path).to(dev)
            prec = resolve_precision(precision or SampleConfig().precision, dev)
            return cls(net, meta, dev, "fp32" if prec == "fp16" else prec, str(path))
        if pipeline_cls is None:
            raise UserError(f"{path} is a diffusion upsampler: load it with Upscaler.from_checkpoint(path, pipeline_cls=Pipeline)")
        return cls.from_pipeline(pipeline_cls.from_checkpoint(path, device=device, precision=precision))

    @classmethod
    def from_pipeline(cls, pipe) -> "Upscaler":
        """The diffusion upsampler of a loaded :class:`~difforge.pipeline.Pipeline`."""
        return cls(pipe.net, pipe.meta, pipe.device, pipe.precision, pipe.source, pipe=pipe)

    @property
    def low_size(self) -> int:
        """The low-res size it was trained on (image_size / scale)."""
        return self.image_size // self.scale

    def describe(self) -> Dict[str, Any]:
        """What ``difforge info`` shows of a regression upscaler (an upsampler is described by its Pipeline)."""
        from ..models.info import nonfinite_weights

        return {"file": self.source, "kind": "upscaler", "network": self.meta["network"]["name"],
                "parameters": sum(p.numel() for p in self.net.parameters()), "scale": self.scale, "image_size": self.image_size,
                "channels": self.channels, "degradation": self.degradation.to_dict(), "network_config": self.meta["network"]["config"],
                "training": self.meta.get("regression", {}), "trained": self.meta.get("train", {}), "nonfinite_weights": nonfinite_weights(self.net)}

    # -- the cascade's check ------------------------------------------------------------------
    def fits(self, base) -> Fit:
        """Whether images of the :class:`Pipeline` ``base`` can be upscaled by this model with their classes."""
        me = self.source or "the upscaler"
        if base.channels != self.channels:
            return Fit(f"{base.source or 'the base model'} makes {base.channels}-channel images but {me} takes {self.channels}-channel images")
        if base.image_size != self.low_size:
            return Fit(f"{base.source or 'the base model'} makes {base.image_size} px images but {me} was trained on "
                       f"{self.low_size} px inputs (x{self.scale} to {self.image_size} px); train it with --image-size {base.image_size * self.scale}")
        if self.class_names:
            missing = [n for n in base.class_names if n not in self.class_names]
            if not base.class_names:
                return Fit(f"{me} is class-conditional ({', '.join(self.class_names)}) but the base model has no classes")
            if missing:
                return Fit(f"{me} does not know the base model's classes {', '.join(missing)} (it has {', '.join(self.class_names)})")
        return Fit(None)

    def class_index(self, name: Optional[str]) -> Optional[int]:
        """A class name -> this model's index (None for a class-agnostic model or no class)."""
        if not self.class_names or name is None:
            return None
        if name not in self.class_names:
            raise UserError(f"unknown class {name!r} for {self.source or 'the upscaler'}; its classes are: {', '.join(self.class_names)}")
        return self.class_names.index(name)

    # -- upscaling ------------------------------------------------------------------------------
    def check_level(self, noise_level: float) -> float:
        level = float(noise_level or 0.0)
        if not 0.0 <= level <= 1.0:
            raise UserError(f"noise_level (--noise-level) must be in [0, 1], got {noise_level}")
        if level > 0 and not (self.diffusion and self.noise_aug):
            raise UserError(f"{self.source or 'this model'} was trained without noise augmentation; --noise-level must be 0 "
                            "(train with --noise-aug S for a model that takes it)")
        return level

    def _tile(self, tile: Optional[int], overlap: Optional[int], h: int, w: int):
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 0):
            raise UserError(f"tile (--tile) must be a whole number >= 0 (0 = whole image), got {tile!r}")
        if overlap is not None and (isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0):
            raise UserError(f"overlap (--overlap) must be a whole number >= 0, got {overlap!r}")
        if self.diffusion:
            tile = tile or self.low_size
            self._check_diffusion_tile(tile)
        elif tile is None:
            tile = 0 if max(h, w) <= WHOLE_MAX else AUTO_TILE
        if tile and overlap is None:
            overlap = min(AUTO_OVERLAP, tile // 4) if not self.diffusion else tile // 4
        if tile and overlap >= tile:
            raise UserError(f"overlap (--overlap {overlap}) must be smaller than the tile (--tile {tile})")
        return tile, overlap or 0

    def _check_diffusion_tile(self, tile: int) -> None:
        from ..errors import ConfigError
        from ..models import registry

        net = self.meta["network"]
        try:
            registry.check_image_size(net["name"], dict(net["config"]), tile * self.scale)
        except ConfigError as e:
            raise UserError(f"--tile {tile}: tiles of {tile * self.scale} px output do not fit the network ({e})") from None

    def upscale_tensor(self, low: torch.Tensor, label: Optional[int] = None, *, seed: int = 0, config: Optional[SampleConfig] = None,
                       noise_level: float = 0.0, tile: Optional[int] = None, overlap: Optional[int] = None, tile_batch: int = 4,
                       progress: Optional[Callable[[int, int], None]] = None, **options) -> torch.Tensor:
        """One low-res image (1, C, h, w) in [-1, 1] -> (1, C, s h, s w) float on the CPU."""
        if low.ndim != 4 or low.shape[0] != 1 or low.shape[1] != self.channels:
            raise UserError(f"expected one {self.channels}-channel image, got a tensor of shape {tuple(low.shape)}")
        level = self.check_level(noise_level)
        tile, overlap = self._tile(tile, overlap, *low.shape[-2:])
        fn = self._diffusion_fn(label, seed, config, level, options) if self.diffusion else self._regression_fn()
        if not tile:
            return fn(low, [0]).float().cpu()
        return tiled(fn, low, self.scale, tile, overlap, batch=tile_batch, progress=progress)

    def _regression_fn(self):
        autocast = autocast_factory(self.precision, self.device)

        def fn(blocks: torch.Tensor, _idx) -> torch.Tensor:
            with torch.inference_mode(), autocast():
                return self.net(blocks.to(self.device)).float().clamp(-1, 1).cpu()

        return fn

    def _diffusion_fn(self, label, seed, config, level, options):
        pipe = self.pipe
        config, opts = pipe.prepare(config or UPSCALE_SAMPLING, dict(options))
        timesteps = pipe.timesteps(config)
        told = bool(self.noise_aug)

        def fn(blocks: torch.Tensor, idx: List[int]) -> torch.Tensor:
            k, size = len(blocks), blocks.shape[-1] * self.scale
            seeds = [seed + TILE_SEED_STRIDE * i for i in idx]
            low = blocks.float()
            if level > 0:
                noise = torch.stack([torch.randn(blocks.shape[1:], generator=torch.Generator().manual_seed(s ^ 0x5EED)) for s in seeds])
                low = noise_low_res(low, level, noise)
            aug = level_features(torch.full((k,), level)).to(self.device) if told else None
            cond = upsample(low, self.scale, clamp=level == 0).to(self.device)
            net = LowResConditionedNet(pipe.net, cond, aug, pipe.learn_sigma)
            meta = dict(pipe.meta, data=dict(pipe.meta["data"], image_size=size))
            codec = None if self.residual is None else ResidualCodec(upsample(blocks.float(), self.scale).to(self.device), self.residual)
            view = type(pipe)(net, meta, pipe.device, pipe.precision, pipe.source, codec, pipe.guide, pipe.class_names)
            labels = None if label is None else torch.full((k,), int(label), dtype=torch.long)
            return view.sample_batches(seeds, labels, config.replace(batch_size=k), opts, timesteps=timesteps)

        return fn

    def upscale(self, images: Sequence, class_label: Optional[str] = None, *, seed: int = 0, labels: Optional[Sequence[Optional[int]]] = None,
                progress: bool = False, **kwargs) -> List[np.ndarray]:
        """uint8 (h, w, C) arrays (any sizes) -> uint8 (s h, s w, C) arrays. ``class_label``: a class
        name for all, or ``labels`` one index (or None) per image; image i uses seed ``seed + i``."""
        from tqdm import tqdm

        from ..data.io import to_uint8

        label = self.class_index(class_label) if class_label is not None else None
        out = []
        for i, img in enumerate(tqdm(images, disable=not progress or len(images) < 2, desc="upscale", unit="image")):
            low = to_tensor(img, self.channels)
            y = self.upscale_tensor(low, labels[i] if labels is not None else label, seed=seed + i, **kwargs)
            out.append(to_uint8(y)[0].numpy())
        return out


def to_tensor(img, channels: int) -> torch.Tensor:
    """uint8 (h, w, C) (or (h, w)) -> (1, C, h, w) float in [-1, 1], grey repeated to RGB or RGB to grey."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise UserError(f"an image must be uint8 (h, w, C), got {arr.dtype} {arr.shape}")
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None].float()
    if x.shape[1] == 4:
        x = x[:, :3]
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x[:, :1].expand(-1, channels, -1, -1)
    return x.div(127.5).sub(1.0)


def consistency(low: torch.Tensor, high: torch.Tensor, deg: Degradation) -> torch.Tensor:
    """Per-image PSNR (dB, [0, 1] scale) of the down-sampled ``high`` against ``low`` (both [-1, 1]):
    the SR output degraded again (blur + down, no noise or JPEG) should give the input back."""
    from ..data.degrade import gaussian_blur
    from ..metrics.image_quality import psnr

    back = downsample(gaussian_blur(high.float(), deg.blur), deg.scale, deg.down).clamp(-1, 1)
    return psnr((back + 1) / 2, (low.float() + 1) / 2, data_range=1.0)


def cascade(pipe, generated, upscaler: "Upscaler", *, seed: int = 0, progress: bool = False, **kwargs):
    """``generated`` (a :class:`~difforge.pipeline.results.Generated` of ``pipe``) upscaled, classes passed by name."""
    from dataclasses import replace

    prepare_cascade(pipe, upscaler)
    labels = None
    if generated.labels is not None and upscaler.class_names:
        labels = [upscaler.class_names.index(generated.class_names[int(k)]) for k in generated.labels]
    big = upscaler.upscale(list(generated.images.numpy()), seed=seed, labels=labels, progress=progress, **kwargs)
    return replace(generated, images=torch.from_numpy(np.stack(big)))


def linked_upsampler_file(pipe) -> Optional[Path]:
    """The upsampler file a cascade run's model file names (``meta["cascade"]``, :mod:`difforge.train.cascade`):
    next to the run first (the path relative to the model file), then where it was written; None for a model
    without one. A UserError when it is not there (the upsampler still training, or the file moved alone)."""
    link = pipe.meta.get("cascade")
    if not link or not pipe.source:  # a training preview's pipeline has no file: it samples at its own size
        return None
    model = Path(pipe.source).resolve()
    tried = [Path(os.path.normpath(model.parent / link.get("upsampler_relpath", ""))), Path(link.get("upsampler_path", "")), model.parent / "upsampler.safetensors"]
    for path in tried:
        if path.is_file() and path.resolve() != model:
            return path
    raise UserError(f"{pipe.source} is the {pipe.image_size} px model of a cascade, and its x{link.get('scale', 2)} upsampler is "
                    f"not there ({tried[0]}: still training, or the model file was moved without it); give it with --upscale FILE "
                    f"(or copy it next to the model file as upsampler.safetensors), or --upscale none for {pipe.image_size} px images")


def prepare_cascade(pipe, model) -> Optional["Upscaler"]:
    """The cascade's upscaler for base :class:`Pipeline` ``pipe``: ``model`` (a file or an
    :class:`Upscaler`) loaded and checked against it, one UserError naming what does not fit; None for None.
    :data:`LINKED`: the upsampler the model file names (:func:`linked_upsampler_file`; None without one), loaded once."""
    if isinstance(model, str) and model == LINKED:
        if pipe.linked_upscaler is None:
            path = linked_upsampler_file(pipe)
            if path is None:
                return None
            pipe.linked_upscaler = prepare_cascade(pipe, str(path))
        return pipe.linked_upscaler
    if model is None or model is False or (isinstance(model, str) and model.lower() == "none"):
        return None
    if getattr(pipe, "joint_mask", False):
        raise UserError(f"cannot cascade: {pipe.source or 'the base model'} generates image+mask pairs; upscaling the masks is not supported")
    up = model if isinstance(model, Upscaler) else Upscaler.from_checkpoint(model, device=str(pipe.device), pipeline_cls=type(pipe))
    problem = up.fits(pipe).problem
    if problem:
        raise UserError(f"cannot cascade: {problem}")
    return up


def preview_grid(up: "Upscaler", data, deg: Degradation, tc, path: Path) -> Path:
    """Training previews: rows of low-res inputs (nearest up-sampled), the model's output and the originals."""
    from ..data.degrade import degrade
    from ..data.io import make_grid, save_image, to_uint8

    n = min(tc.preview_num, len(data.images), 8)
    hr = data.images[:n].float().div(127.5).sub(1.0)
    low = degrade(hr, deg.deterministic)
    labels = [int(k) if up.class_names and data.labels is not None else None for k in (data.labels[:n] if data.labels is not None else [None] * n)]
    made = torch.cat([up.upscale_tensor(low[i : i + 1], labels[i], seed=i, steps=tc.preview_steps) if up.diffusion
                      else up.upscale_tensor(low[i : i + 1]) for i in range(n)])
    nearest = torch.nn.functional.interpolate(low, scale_factor=deg.scale, mode="nearest")
    rows = torch.cat([to_uint8(nearest), to_uint8(made), to_uint8(hr)]).numpy()
    return save_image(make_grid(rows, nrow=n), path)


__all__ = ["AUTO_OVERLAP", "AUTO_TILE", "Fit", "LINKED", "TILE_SEED_STRIDE", "UPSCALE_SAMPLING", "Upscaler", "cascade",
           "consistency", "count_tiles", "linked_upsampler_file", "prepare_cascade", "preview_grid", "to_tensor"]
