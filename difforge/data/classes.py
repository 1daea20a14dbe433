"""What skipping bad files does to a dataset's classes, said out loud.

``--skip-bad-images`` can empty a class folder. Training on, the class would be a label with no
image behind it, and a dataset left with one class would quietly become unconditional. So an
emptied class is refused with one message naming it and its files, unless the caller asks to drop
it (``drop_empty_classes``), which is then said in a warning. Skipped files are named (the first
ten, and the count), and classes too small to learn from get small-data advice.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .scan import FolderIndex, listing, printable, short

SMALL_CLASS = 20
"""Fewer images than this in a class (or in an unconditional set) earns a small-data warning."""


def skipped_warning(bad: list[tuple[Path, str]], total: int, root: Path) -> str:
    """One line naming the skipped files: the first ten with their reason, then the count."""
    files = [f"{short(p, root)} ({r})" for p, r in bad]
    return f"skipped {len(bad)} of {total} images in {printable(root)} that cannot be read: {listing(files)}"


def settle_classes(
    index: FolderIndex, labels: list[int], bad: list[tuple[Path, str]], drop_empty: bool
) -> tuple[list[str], list[int], list[str]]:
    """Class names and labels once bad files are gone, and the warnings that go with them.

    ``labels`` are the labels of the images kept. A class with files but no image kept raises
    :class:`DataError` unless ``drop_empty``; dropped classes are renumbered away, and when fewer
    than two classes remain the dataset becomes unconditional (names ``[]``, labels 0), with a
    warning saying so.
    """
    names = list(index.class_names)
    if not names:
        return [], labels, []
    kept = set(labels)
    empty = [k for k in range(len(names)) if k not in kept]
    if not empty:
        return names, labels, []
    label_of = dict(zip(index.paths, index.labels))
    files = [f"{short(p, index.root)} ({r})" for p, r in bad if label_of.get(p) in empty]
    which = ", ".join(repr(names[k]) for k in empty)
    one = len(empty) == 1
    if not drop_empty:
        raise DataError(
            f"class folder{'' if one else 's'} {which} in {printable(index.root)} "
            f"{'has' if one else 'have'} no readable image left after skipping bad files: {listing(files)}; "
            f"fix or replace those files, remove the folder{'' if one else 's'}, "
            f"or pass --drop-empty-classes to train without {'it' if one else 'them'}"
        )
    warnings = [
        f"class{'' if one else 'es'} {which} dropped: none of {'its' if one else 'their'} images can be read "
        f"({listing(files)}); the model will not know {'it' if one else 'them'}"
    ]
    remap = {old: new for new, old in enumerate(k for k in range(len(names)) if k not in empty)}
    names = [n for k, n in enumerate(names) if k not in empty]
    labels = [remap[k] for k in labels]
    if len(names) < 2:
        warnings.append(
            f"only class {names[0]!r} is left, so the model is unconditional (no class labels); "
            f"fix the dropped class folder{'' if one else 's'} to train a class-conditional model"
        )
        return [], [0] * len(labels), warnings
    return names, labels, warnings


def small_data_warning(names: list[str], labels: list[int]) -> list[str]:
    """Small-data advice when a class (or the whole unconditional set) has under :data:`SMALL_CLASS` images."""
    if names:
        counts = [labels.count(k) for k in range(len(names))]
        small = [(n, c) for n, c in zip(names, counts) if c < SMALL_CLASS]
        if not small:
            return []
        what = listing([f"{n!r} ({c} images)" for n, c in small], sep=", ")
        what = f"class {what} has" if len(small) == 1 else f"classes {what} have"
    elif len(labels) < SMALL_CLASS:
        what = f"the dataset ({len(labels)} images) has"
    else:
        return []
    return [
        f"small data: {what} fewer than {SMALL_CLASS} images; a diffusion model this short of examples tends to "
        f"copy them and samples will be weak: add images if you can, augment (--augment flips,rot90 --augment-p 0.12, EDM's CIFAR-10 value; "
        f"or --hflip where mirror images are fine), "
        f"train fewer steps and compare samples with the training images"
    ]
