"""A model file's weights fitted to a fine-tune's network where the two differ only in what the
network is told about augmentation (``--augment``) and crops (``--crop-p``).

The UNet adds ``aug_embed(labels)`` to its time embedding; the embedding starts at zero and an
absent label vector adds nothing (:class:`difforge.models.unet.UNet`). So the file's network and
the fine-tune's compute the same function whenever the labels a side lacks are zero:

- a file trained without them, fine-tuned with them: the missing columns start at zero, as they
  would in a new run -- the fine-tune starts exactly at the file's network;
- a file trained with them, fine-tuned without: its embedding is left out (at sampling it never
  added anything);
- both, in another mix: the label vector's parts come in :data:`difforge.data.crops.LABEL_LAYOUT`'s
  order (augment 6, crop 3), so its width says which parts a side has, and each part's columns
  move to their place.

Anything else that differs stays an error naming the layers (:func:`difforge.modelfile.check_fit`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ..data.crops import label_parts
from ..modelfile import load_model_file, load_weights_into

KEY = "aug_embed.weight"
# the label vector's width -> {part: (start, width)}, for every mix a run can have
PARTS = {sum(w for _, w in p.values()): p for p in (label_parts(a, c) for a, c in ((True, False), (False, True), (True, True)))}


def fit_label_embedding(own: Dict[str, torch.Tensor], tensors: Dict[str, torch.Tensor]) -> Optional[str]:
    """Make ``tensors`` (a file's state dict, changed in place) fit ``own`` in the label embedding;
    returns what was done, in words, or None when nothing needed doing (or could be done)."""
    mine, theirs = own.get(KEY), tensors.get(KEY)
    if mine is None and theirs is not None:
        del tensors[KEY]
        return "its augmentation-label embedding is left out (this run tells the network no augmentation or crops)"
    if mine is None or (theirs is not None and theirs.shape == mine.shape):
        return None
    width = 0 if theirs is None else theirs.shape[1]
    if width and (width not in PARTS or mine.shape[1] not in PARTS or theirs.shape[0] != mine.shape[0]):
        return None  # not a layout this knows: check_fit names the mismatch
    fitted = torch.zeros_like(mine)
    kept = []
    for part, (start, size) in PARTS.get(width, {}).items():
        if part in PARTS[mine.shape[1]]:
            to = PARTS[mine.shape[1]][part][0]
            fitted[:, to:to + size] = theirs[:, start:start + size]
            kept.append(part)
    tensors[KEY] = fitted
    return (f"its augmentation-label embedding fitted to this run: {', '.join(kept) or 'nothing'} kept, "
            "what the file lacks starts at zero (so training starts at the file's network)")


def load_pretrained(net: torch.nn.Module, path) -> Tuple[Dict[str, Any], Optional[str]]:
    """Load model file ``path`` into ``net`` for a fine-tune: (the file's metadata, what was fitted or None)."""
    tensors, meta = load_model_file(path)
    note = fit_label_embedding(net.state_dict(), tensors)
    load_weights_into(net, tensors, path)
    return meta, note


__all__ = ["fit_label_embedding", "load_pretrained"]
