"""Augmentation that does not leak into samples (Karras et al. 2022, EDM, appendix D.2).

Each training image is augmented with probability ``p`` per augmentation (independently), and the
parameters of what was done are handed to the network as a conditioning vector (``aug_labels``,
see :class:`difforge.models.unet.UNet` ``aug_dim``). At sampling the vector is zero ("not
augmented"), so the model learns the augmented images as *other* images and samples only the
un-augmented distribution: a mirrored glyph is never sampled, yet every mirrored image still
teaches the network. Compare the plain ``hflip``, which makes mirror images part of the data.

The augmentations (names of ``data.augment``):

- ``flips``: a horizontal and a vertical flip, each applied (as EDM's xflip/yflip) with
  probability p and then a fair coin;
- ``rot90``: a rotation by k * 90 degrees, k uniform in 0..3, with probability p;
- ``translate``: an integer shift of up to 1/8 of the image in x and y (reflect padding), with
  probability p.

The label vector has :data:`AUG_DIM` entries, zero for "not done":
``[xflip, yflip, cos(k pi/2) - 1, sin(k pi/2), tx / size, ty / size]``.

Random numbers come from the caller as uniform draws ``u`` (B, :data:`DRAWS`), so the training
loop's counter-based generator (and therefore resume and DDP) decides them.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

AUG_DIM = 6
DRAWS = 9  # uniform numbers per image: gate + value for each flip, gate + k for rot90, gate + tx + ty
NAMES = ("flips", "rot90", "translate")


def parse(text: str) -> Tuple[str, ...]:
    """``"flips, rot90"`` -> ("flips", "rot90") (the config checks the names)."""
    return tuple(a.strip() for a in str(text or "").split(",") if a.strip())


def augment(x: torch.Tensor, u: torch.Tensor, names: Sequence[str], p: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Augment float images ``x`` (B, C, H, W) with uniform draws ``u`` (B, DRAWS); returns the
    images and their labels (B, AUG_DIM) (rows of zeros for images left alone)."""
    b, _, h, w = x.shape
    u = u.to(x.device, torch.float32)
    labels = torch.zeros(b, AUG_DIM, device=x.device)
    out = x.clone()
    if "flips" in names:
        fx = (u[:, 0] < p) & (u[:, 1] < 0.5)
        fy = (u[:, 2] < p) & (u[:, 3] < 0.5)
        out = torch.where(fx[:, None, None, None], out.flip(-1), out)
        out = torch.where(fy[:, None, None, None], out.flip(-2), out)
        labels[:, 0], labels[:, 1] = fx.float(), fy.float()
    if "rot90" in names:
        k = torch.where(u[:, 4] < p, (u[:, 5] * 4).long().clamp(max=3), torch.zeros_like(u[:, 5], dtype=torch.long))
        for r in (1, 2, 3):
            sel = k == r
            if sel.any():
                out[sel] = torch.rot90(out[sel], r, dims=(-2, -1))
        angle = k.float() * (math.pi / 2)
        labels[:, 2], labels[:, 3] = torch.cos(angle).round() - 1.0, torch.sin(angle).round()
    if "translate" in names:
        m = max(1, min(h, w) // 8)
        on = u[:, 6] < p
        tx = torch.where(on, ((u[:, 7] * 2 - 1) * m).round(), torch.zeros_like(u[:, 7])).long()
        ty = torch.where(on, ((u[:, 8] * 2 - 1) * m).round(), torch.zeros_like(u[:, 8])).long()
        padded = F.pad(out, (m, m, m, m), mode="reflect")
        for i in torch.nonzero(on).flatten().tolist():
            top, left = m - int(ty[i]), m - int(tx[i])
            out[i] = padded[i, :, top:top + h, left:left + w]
        labels[:, 4], labels[:, 5] = tx.float() / w, ty.float() / h
    return out, labels


__all__ = ["AUG_DIM", "DRAWS", "NAMES", "augment", "parse"]
