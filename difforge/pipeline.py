"""Pipeline: a model file in, images out. The one way every consumer makes images.

    pipe = Pipeline.from_checkpoint("runs/x/checkpoints/ema.safetensors")
    out = pipe.generate(num=8, class_label="scratch", sampler="ddim", steps=50, seed=0)
    out.images  # (8, H, W, C) uint8 tensor;  out.pil()  # list of PIL images
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from .diffusion.denoiser import Denoiser
from .diffusion.sampling import sample_images
from .diffusion.schedule import Schedule
from .errors import CheckpointError, UserError
from .models import registry
from .runtime import autocast_factory, resolve_device, resolve_precision
from .train.checkpoint import load_model_file, load_weights_into

ClassLabel = Union[None, int, str]


@dataclass
class Generated:
    """Images as uint8 (N, H, W, C) and their class indices (or None for an unconditional model)."""

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    class_names: List[str]

    def pil(self):
        from .data.io import images_to_pil

        return images_to_pil(self.images.numpy())


class Pipeline:
    """A loaded, ready-to-sample model: network + schedule + the description from its file."""

    def __init__(self, net: torch.nn.Module, meta: Dict[str, Any], device: torch.device, precision: str = "fp32", source: str = ""):
        self.net = net.eval().requires_grad_(False)
        self.meta = meta
        self.device = device
        self.precision = precision
        self.source = source
        d = meta["diffusion"]
        self.schedule = Schedule.named(d["noise_schedule"], d["diffusion_steps"])
        self.target = d["target"]
        self.learn_sigma = bool(d.get("learn_sigma", False))
        data = meta["data"]
        self.image_size = int(data["image_size"])
        self.channels = int(data["channels"])
        self.class_names: List[str] = list(data.get("class_names") or [])

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", precision: str = "auto") -> "Pipeline":
        tensors, meta = load_model_file(path)
        try:
            net_meta = meta["network"]
            net = registry.build(net_meta["name"], **net_meta["config"])
            meta["diffusion"], meta["data"]
        except KeyError as e:
            raise CheckpointError(f"{path} lacks the {e} entry of a difforge model description") from None
        load_weights_into(net, tensors, path)
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        if prec == "fp16":  # sampling in fp16 without loss scaling is risky; bf16/fp32 are safe
            prec = "fp32"
        return cls(net.to(dev), meta, dev, prec, source=str(path))

    # -- description ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def resolve_class(self, label: ClassLabel) -> Optional[int]:
        """A class name or index -> index; None for unconditional models or 'no class'."""
        if label is None:
            return None
        if not self.class_names:
            raise UserError("this model is unconditional; leave out --class")
        if isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
            idx = int(label)
            if not 0 <= idx < self.num_classes:
                raise UserError(f"class index {idx} is out of range; the model has classes 0..{self.num_classes - 1}: {', '.join(self.class_names)}")
            return idx
        if label in self.class_names:
            return self.class_names.index(label)
        raise UserError(f"unknown class {label!r}; the model's classes are: {', '.join(self.class_names)}")

    def labels_for(self, num: int, class_label: ClassLabel) -> Optional[torch.Tensor]:
        """Labels of a request: one class, ``all`` (num per class, class-major) or random classes."""
        if not self.class_names:
            if class_label not in (None, "all"):
                self.resolve_class(class_label)
            return None
        if class_label == "all":
            return torch.arange(self.num_classes).repeat_interleave(num)
        if class_label is None:
            return torch.arange(num) % self.num_classes
        return torch.full((num,), self.resolve_class(class_label), dtype=torch.long)

    def denoiser(self, cfg: float = 3.0, clip_x0: bool = True, threshold: Optional[float] = None, cfg_rescale: float = 0.0) -> Denoiser:
        return Denoiser(
            self.net,
            self.schedule,
            target=self.target,
            learn_sigma=self.learn_sigma,
            num_classes=self.num_classes,
            cfg_scale=cfg if self.num_classes else 1.0,
            cfg_rescale=cfg_rescale,
            clip_x0=clip_x0,
            threshold=threshold,
            autocast=autocast_factory(self.precision, self.device),
        )

    # -- generation -----------------------------------------------------------------------
    def generate(
        self,
        num: int = 16,
        class_label: ClassLabel = None,
        *,
        sampler: str = "ddim",
        steps: Optional[int] = 50,
        spacing: Optional[str] = None,
        eta: Optional[float] = None,
        cfg: float = 3.0,
        cfg_rescale: float = 0.0,
        clip_x0: bool = True,
        threshold: Optional[float] = None,
        seed: int = 0,
        seeds: Optional[Sequence[int]] = None,
        batch_size: int = 16,
        progress: bool = False,
        callback: Optional[Callable] = None,
        **sampler_opts,
    ) -> Generated:
        """Make images. Image i uses seed ``seed + i`` (or ``seeds[i]``), whatever the batch size.

        ``class_label``: a name or index, ``"all"`` (``num`` images of every class) or None
        (classes in turn for a conditional model). ``cfg`` is the classifier-free guidance scale
        (1 = plain conditional). ``steps=None`` runs every training step.
        """
        if num < 1:
            raise UserError(f"num must be >= 1, got {num}")
        labels = self.labels_for(num, class_label)
        total = len(labels) if labels is not None else num
        if seeds is None:
            seeds = [seed + i for i in range(total)]
        elif len(seeds) != total:
            raise UserError(f"got {len(seeds)} seeds for {total} images")
        if eta is not None:
            sampler_opts["eta"] = eta
        try:
            x = self._sample(labels, seeds, sampler, steps, spacing, cfg, cfg_rescale, clip_x0, threshold, batch_size, progress, callback, sampler_opts)
        except ValueError as e:  # a sampler / option that does not fit: the user's to fix
            raise UserError(str(e)) from None
        from .data.io import to_uint8

        return Generated(to_uint8(x), labels, self.class_names)

    def _sample(self, labels, seeds, sampler, steps, spacing, cfg, cfg_rescale, clip_x0, threshold, batch_size, progress, callback, sampler_opts):
        return sample_images(
            self.denoiser(cfg, clip_x0, threshold, cfg_rescale),
            shape=(self.channels, self.image_size, self.image_size),
            seeds=seeds,
            labels=labels,
            sampler=sampler,
            steps=steps,
            spacing=spacing,
            batch_size=batch_size,
            device=self.device,
            progress=progress,
            callback=callback,
            **sampler_opts,
        )

    def describe(self) -> Dict[str, Any]:
        n = sum(p.numel() for p in self.net.parameters())
        return {
            "file": self.source,
            "network": self.meta["network"]["name"],
            "parameters": n,
            "image_size": self.image_size,
            "channels": self.channels,
            "classes": self.class_names,
            "diffusion": self.meta["diffusion"],
            "network_config": self.meta["network"]["config"],
            "trained": self.meta.get("train", {}),
            "weights": self.meta.get("weights", "?"),
        }


def save_generated(out: Generated, out_dir, fmt: str = "png", grid: bool = False, npz: bool = False, prefix: str = "sample") -> Dict[str, Any]:
    """Write images (and optionally a grid and an ``.npz``) to ``out_dir``; return what was written."""
    from .data.io import make_grid, save_image, save_images, save_npz

    out_dir = Path(out_dir)
    arr = out.images.numpy()
    labels = out.labels.numpy() if out.labels is not None else None
    written: Dict[str, Any] = {"images": save_images(arr, out_dir, prefix=prefix, fmt=fmt, labels=labels, class_names=out.class_names or None)}
    if grid:
        if labels is not None and out.class_names:
            written["grids"] = []
            for k, name in enumerate(out.class_names):
                sel = arr[labels == k]
                if len(sel):
                    written["grids"].append(save_image(make_grid(sel), out_dir / f"grid_{name}.{fmt}"))
        else:
            written["grids"] = [save_image(make_grid(arr), out_dir / f"grid.{fmt}")]
    if npz:
        written["npz"] = save_npz(out_dir / f"{prefix}s_{len(arr)}x{arr.shape[1]}x{arr.shape[2]}x{arr.shape[3]}.npz", arr, labels)
    return written
