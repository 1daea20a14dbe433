"""A request's class labels against a model's class names: one class (name or index), ``all`` or
classes in turn; every wrong label is one UserError naming the classes there are."""

from __future__ import annotations

from typing import List, Optional, Union

import torch

from ..errors import UserError

ClassLabel = Union[int, str, None]


def resolve_class(names: List[str], label: ClassLabel) -> Optional[int]:
    """A class name or index -> index; None for unconditional models or 'no class'."""
    if label is None:
        return None
    if not names:
        raise UserError("this model is unconditional; leave out --class")
    if isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
        idx = int(label)
        if not 0 <= idx < len(names):
            raise UserError(f"class index {idx} is out of range; the model has classes 0..{len(names) - 1}: {', '.join(names)}")
        return idx
    if label in names:
        return names.index(label)
    raise UserError(f"unknown class {label!r}; the model's classes are: {', '.join(names)}")


def labels_for(names: List[str], num: int, class_label: ClassLabel) -> Optional[torch.Tensor]:
    """Labels of a request: one class, ``all`` (num per class, class-major) or classes in turn; None without classes."""
    if not names:
        if class_label not in (None, "all"):
            resolve_class(names, class_label)
        return None
    if class_label == "all":
        return torch.arange(len(names)).repeat_interleave(num)
    if class_label is None:
        return torch.arange(num) % len(names)
    return torch.full((num,), resolve_class(names, class_label), dtype=torch.long)


__all__ = ["ClassLabel", "labels_for", "resolve_class"]
