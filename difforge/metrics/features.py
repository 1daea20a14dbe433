"""Feature extractors: images in, feature vectors out. The metrics never know which network ran.

An extractor is any object with

- ``name``: a string that identifies the network and its weights; it is stored in reference files,
  so features from different networks are never compared;
- ``outputs``: which of ``"pool"`` (the main (N, D) features: FID, KID, precision/recall),
  ``"spatial"`` (sFID) and ``"logits"`` (Inception Score) it produces;
- ``__call__(images)``: uint8 (N, 3, H, W) tensor -> dict of float (N, ...) tensors.

Two are built in:

- ``inception``: the FID InceptionV3 (``inception.py``), all three outputs, from the local weight file.
- a TorchScript file (``torch.jit.save``; named by its content hash): a module mapping float images **in [0, 1]**, shape
  (N, 3, H, W) at the evaluated resolution (it resizes for itself if it needs to), to (N, D)
  features; it provides ``pool`` only. Loading TorchScript runs no Python code from the file.

:func:`extract` runs an extractor over uint8 NHWC batches with a progress bar and returns numpy
float32 arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import UserError

PathLike = Union[str, os.PathLike]
OUTPUTS = ("pool", "spatial", "logits")


def _sha256(path: Path, limit: Optional[int] = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:limit]


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def inception_name(weights_file: Path) -> str:
    """``inception-v3-fid`` for the published weight file; other weights get their hash appended."""
    from .inception import WEIGHTS_SHA256_PREFIX

    digest = _sha256(Path(weights_file), 16)
    return "inception-v3-fid" if digest.startswith(WEIGHTS_SHA256_PREFIX) else f"inception-v3-fid:{digest}"


class InceptionExtractor:
    """The FID Inception network: pool (2048), spatial (2023) and logits (1008)."""

    outputs = OUTPUTS

    def __init__(self, net: torch.nn.Module, device: Union[str, torch.device] = "cpu", precision: str = "fp32", name: str = "inception-v3-fid"):
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.precision = precision
        self.name = name

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        with _autocast(self.precision, self.device):
            out = self.net(images.to(self.device))
        return {k: v.float() for k, v in out.items()}


class ScriptExtractor:
    """A TorchScript module: float [0, 1] (N, 3, H, W) -> (N, D) features, reported as ``pool``."""

    outputs = ("pool",)

    def __init__(self, module: torch.nn.Module, name: str, device: Union[str, torch.device] = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.name = name
        self.precision = precision

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = images.to(self.device).float() / 255.0
        with _autocast(self.precision, self.device):
            out = self.module(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserError(f"feature extractor {self.name} returned {got} for {tuple(x.shape)} images; it must return (N, D) features")
        return {"pool": out.float()}


def load_extractor(
    spec: str = "inception",
    *,
    inception_weights: Optional[PathLike] = None,
    download: bool = False,
    device: Union[str, torch.device] = "cpu",
    precision: str = "fp32",
):
    """``"inception"`` (the FID network; weights found as in :func:`inception.find_weights`) or a TorchScript path."""
    if spec == "inception":
        from .inception import load_fid_inception

        net = load_fid_inception(inception_weights, device=device, download=download)
        return InceptionExtractor(net, device, precision, name=inception_name(net.weights_file))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"--features {spec}: no such file; use 'inception' or the path of a TorchScript feature extractor (.pt)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates TorchScript; it still loads
            module = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as e:
        raise UserError(
            f"{path} is not a TorchScript file ({type(e).__name__}); save your extractor with "
            f"torch.jit.save(torch.jit.script(model), '{path.name}')"
        ) from e
    return ScriptExtractor(module, f"torchscript:{_sha256(path, 16)}", device, precision)


def extract(
    extractor,
    batches: Iterable[np.ndarray],
    outputs: Tuple[str, ...] = ("pool",),
    total: Optional[int] = None,
    desc: str = "features",
    progress: bool = True,
) -> Dict[str, np.ndarray]:
    """Run ``extractor`` over uint8 (N, H, W, C) batches (C 1 or 3); float32 arrays for each of ``outputs``."""
    from tqdm import tqdm

    missing = [o for o in outputs if o not in extractor.outputs]
    if missing:
        raise UserError(f"feature extractor {extractor.name} does not produce {', '.join(missing)} features")
    parts: Dict[str, list] = {o: [] for o in outputs}
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for batch in batches:
            x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            out = extractor(x)
            for o in outputs:
                v = out[o].detach().to("cpu", torch.float32).numpy()
                if not np.isfinite(v).all():
                    raise FloatingPointError(f"feature extractor {extractor.name} produced NaN/inf {o} features")
                parts[o].append(v)
            bar.update(len(batch))
    if not any(parts[o] for o in outputs):
        raise UserError("no images to extract features from")
    return {o: np.concatenate(parts[o]) for o in outputs}
