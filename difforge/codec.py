"""The latent codec: a frozen VAE model file and a scale factor (Rombach et al. 2022, sec. 3 and 4.3.2).

A latent diffusion model's network sees scaled latents s * z, z = E(x); its samples go back to
pixels as D(z / s). The model file links its VAE: ``meta["latent"]`` (written by
:meth:`LatentCodec.link`) holds the VAE's path (absolute, and relative to the model file), its
sha256, the scale factor and the latent shape, while ``data.image_size`` stays in pixels.
:func:`load_codec` finds the VAE again (or takes ``--vae``), checks the hash and gives the
:class:`LatentCodec` the pipeline decodes with. The VAE is built through ``models.registry``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from .errors import CheckpointError
from .modelfile import build_network, check_meta, file_sha256, load_model_file, read_metadata
from .models.vae import AutoencoderKL


def read_vae_kind(path) -> None:
    """CheckpointError unless ``path`` is a VAE model file."""
    kind = read_metadata(path).get("kind", "diffusion")
    if kind != "vae":
        raise CheckpointError(f"{path} is a {str(kind)[:40]} model file, not a VAE; give a file written by `difforge train-vae`")


def load_vae(path, device: torch.device = torch.device("cpu"), check_weights: bool = True) -> Tuple[AutoencoderKL, Dict[str, Any]]:
    """A VAE model file -> (frozen VAE in eval mode on ``device``, its metadata); ``check_weights``
    as in :func:`difforge.modelfile.load_model_file`."""
    read_vae_kind(path)
    tensors, meta = load_model_file(path, check_weights=check_weights)
    vae = build_network(check_meta(meta, path), tensors, path)
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

    def link(self, model_dir: Path, image_size: int) -> Dict[str, Any]:
        """A model file's ``latent`` entry (``model_dir``: where the model file is written), read back by :func:`load_codec`."""
        vae_abs = self.path.resolve()
        try:
            rel = os.path.relpath(vae_abs, Path(model_dir).resolve())
        except ValueError:  # another drive (Windows)
            rel = None
        c, h, w = self.latent_shape(image_size)
        return {
            "vae_path": str(vae_abs),
            "vae_relpath": rel,
            "vae_sha256": self.sha256,
            "scale_factor": self.scale_factor,
            "latent_channels": c,
            "latent_size": h,
            "downsample": self.vae.downsample,
        }


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


__all__ = ["LatentCodec", "load_codec", "load_vae", "read_vae_kind"]
