"""Training on random crops as well as whole images (Patch Diffusion, Wang et al. 2023).

Why: at 64 px a CPU budget buys few steps, and what the models then lack is the fine, local
detail (grain, thin lines) -- detail that a crop shows as well as the whole image does, at a
quarter of the cost of a step when the crop is half the side. So with probability ``p`` a whole
micro-batch is replaced by crops of ``size`` x ``size`` pixels, each image at its own random
offset, and the network is told so: the crop's place joins the augmentation label vector that
the UNet adds to its time embedding (``aug_labels``, :mod:`difforge.data.augment`). Sampling
leaves that vector at zero -- "the whole image" -- so the crops teach local statistics without
ever being sampled as images (as EDM's augmentation labels keep augmentations out of samples).

One size for the whole batch (a batch is one tensor); a crop-step is cheaper, so a time budget
simply makes more of them. Labels (:data:`CROP_DIM` entries, zero for a whole image):
``[1, left / W, top / H]``.

Random numbers come from the caller: ``gate`` (one uniform number for the batch, the same on
every rank) and ``where`` (B, 2) uniform numbers for the offsets, so the training loop's
counter-based generator decides them and resume and DDP stay exact.
"""

from __future__ import annotations

from typing import Tuple

import torch

from .augment import AUG_DIM

CROP_DIM = 3
LABEL_LAYOUT = (("augment", AUG_DIM), ("crop", CROP_DIM))  # the network's label vector: the parts a run has, in this order


def label_parts(augment: bool, crop: bool) -> dict:
    """{part: (start, width)} of the label vector of a run with augmentation and / or crops."""
    on, out, start = {"augment": augment, "crop": crop}, {}, 0
    for part, width in LABEL_LAYOUT:
        if on[part]:
            out[part], start = (start, width), start + width
    return out


def default_size(image_size: int) -> int:
    """Half the side: a crop-step costs about a quarter of a whole-image step."""
    return image_size // 2


def random_crops(x: torch.Tensor, gate: float, where: torch.Tensor, p: float, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images ``x`` (B, C, H, W), or crops of them when ``gate < p``; returns (images, labels (B, CROP_DIM))."""
    b, _, h, w = x.shape
    labels = torch.zeros(b, CROP_DIM, device=x.device)
    if not gate < p:
        return x, labels
    where = where.to(torch.float32)
    left = (where[:, 0] * (w - size + 1)).long().clamp(max=w - size)
    top = (where[:, 1] * (h - size + 1)).long().clamp(max=h - size)
    out = torch.stack([x[i, :, int(top[i]):int(top[i]) + size, int(left[i]):int(left[i]) + size] for i in range(b)])
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    labels[:, 0] = 1.0
    labels[:, 1], labels[:, 2] = left.float().to(x.device) / w, top.float().to(x.device) / h
    return out, labels


__all__ = ["CROP_DIM", "LABEL_LAYOUT", "default_size", "label_parts", "random_crops"]
