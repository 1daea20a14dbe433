"""The training images of a run: a user folder or the built-in defect set, as uint8 tensors in RAM.

Images are decoded and validated once; batches are then gathered from one (N, C, H, W) uint8
tensor by index (4x smaller than float32, and no per-step decoding or DataLoader workers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from ..config import DataConfig
from ..errors import DataError


@dataclass
class TrainingImages:
    """``warnings``: one-line messages for the run log (links not followed, files skipped, classes
    dropped, small classes); ``bad``: every skipped file with its reason (``skipped`` counts them)."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: Optional[torch.Tensor]  # (N,) int64, or None when unconditional
    class_names: List[str]
    source: str
    skipped: int = 0
    warnings: List[str] = field(default_factory=list)
    bad: List[Tuple[Path, str]] = field(default_factory=list)
    paths: List[Path] = field(default_factory=list)  # the file of each row (a folder's data; captions are read by path)
    masks: Optional[torch.Tensor] = None  # (N, 1, H, W) bool defect masks, when the loss weighs them (train/loss_masks.py)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


def is_grayscale(images: torch.Tensor) -> bool:
    """True when every image of a uint8 (N, C, H, W) batch has one channel or R = G = B everywhere."""
    if images.shape[1] == 1:
        return True
    return bool(torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2]))


def settle_channels(images: torch.Tensor, wanted) -> Tuple[torch.Tensor, str]:
    """``channels: auto``: decoded as RGB, kept as one channel when every image is grey
    (a 1-channel file, or R = G = B), so no capacity or time goes into colour that is not there.
    Returns the images and a note for the data line ("" unless auto)."""
    if wanted != "auto":
        return images, ""
    if is_grayscale(images):
        return images[:, :1].contiguous(), " (channels auto: every image is grey, training 1 channel)"
    return images, " (channels auto: colour images, training 3 channels)"


def check_num_classes(cfg: DataConfig, found: int, source: str) -> None:
    """``num_classes`` (IDDM's / improved-diffusion's ``--num_classes``) must be the data's class count."""
    if cfg.num_classes is not None and cfg.num_classes != found:
        has = f"{found} classes" if found else "no classes (unconditional)"
        raise DataError(f"--num_classes {cfg.num_classes} does not match the data: {source} has {has}; "
                        f"leave --num_classes out (the data decides) or point --data at the right folder")


def load_training_images(cfg: DataConfig, progress: bool = True) -> TrainingImages:
    """Decode the configured images once. ``cfg.data=None`` means the built-in defect dataset.
    ``cfg.channels="auto"`` decides 1 or 3 channels from the images (:func:`settle_channels`)."""
    decode_channels = 3 if cfg.channels == "auto" else cfg.channels
    if cfg.data is None:
        from ..config import materials_of
        from .builtin import DEFAULT_MATERIALS, generate_arrays

        materials = materials_of(cfg.builtin_materials)
        arrays, labels, names = generate_arrays(
            size=cfg.image_size, per_class=cfg.builtin_per_class, seed=cfg.builtin_seed, channels=decode_channels,
            materials=materials,
        )
        on = "" if materials == DEFAULT_MATERIALS else f", on {', '.join(materials)}"
        images, note = settle_channels(torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous(), cfg.channels)
        conditional = cfg.conditional is not False
        check_num_classes(cfg, len(names) if conditional else 0, "the built-in defect dataset")
        return TrainingImages(
            images=images,
            labels=torch.from_numpy(labels).long() if conditional else None,
            class_names=list(names) if conditional else [],
            source=f"built-in defect dataset ({len(names)} classes x {cfg.builtin_per_class}, seed {cfg.builtin_seed}{on}){note}",
        )
    from .folder import load_folder, scan_folder
    from .scan import printable

    index = scan_folder(cfg.data, conditional=cfg.conditional, from_filenames=bool(cfg.labels_from_filenames))
    loaded = load_folder(
        index, cfg.image_size, channels=decode_channels, skip_bad=cfg.skip_bad_images, progress=progress,
        drop_empty_classes=bool(cfg.drop_empty_classes),
    )
    if len(loaded.images) == 0:
        raise DataError(f"no usable images in {printable(cfg.data)}")
    conditional = bool(loaded.class_names)
    if cfg.conditional and not conditional:
        raise DataError(
            f"image folder {printable(cfg.data)} has fewer than two classes with readable images left, so it cannot "
            f"train a conditional model; fix the bad files or pass --no-conditional"
        )
    check_num_classes(cfg, len(loaded.class_names) if conditional else 0, printable(cfg.data))
    images, note = settle_channels(loaded.images, cfg.channels)
    return TrainingImages(
        images=images,
        labels=loaded.labels if conditional else None,
        class_names=list(loaded.class_names) if conditional else [],
        source=printable(cfg.data) + note,
        skipped=len(loaded.bad),
        warnings=list(loaded.warnings),
        bad=list(loaded.bad),
        paths=list(loaded.paths),
    )
