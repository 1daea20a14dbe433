"""Find the image files of a folder without decoding them: layouts, class names, links.

Two layouts are understood:

- **class sub-folders** ``root/<class>/**/*.png``: every non-hidden sub-folder that contains
  images (searched recursively inside it) is a class; class names are the folder names, sorted.
  Two or more classes make a *conditional* dataset. Images lying loose directly in ``root`` next
  to class folders are ignored (they are often previews or notes) and listed in
  :attr:`FolderIndex.ignored` and in a warning.
- **flat** ``root/*.png``: no sub-folder holds images; an *unconditional* dataset.

Hidden files and folders (name starting with ``.``) are skipped everywhere, which also skips the
``.name.tmp`` files of an interrupted atomic write.

Directory links are followed with care, because ``os.walk(followlinks=True)`` turns a link loop
into endless copies of the same images under the wrong class: a link that leads back into the
data folder is never followed (its images are read once, where they really are), and a folder
outside the tree is read at most once however many links lead to it. Each link left out becomes
one line in :attr:`FolderIndex.warnings`, which the caller logs.

Names on disk may be any bytes (a folder name that is not valid UTF-8 arrives as a ``str`` with
surrogate escapes); :func:`printable` turns them into text that can be logged and stored, while
the paths kept for reading stay the real ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

PathLike = Union[str, os.PathLike]

MAX_LISTED = 10
_EXTS = ", ".join(IMAGE_EXTENSIONS)


@dataclass
class FolderIndex:
    """The image files of a folder, before decoding.

    ``labels[i]`` indexes ``class_names`` when ``conditional``; otherwise every label is 0 and
    ``class_names`` is empty. ``class_names`` are printable (see :func:`printable`); ``paths`` are
    the real paths to open. ``ignored`` lists loose images in ``root`` that a class-folder layout
    leaves out; ``warnings`` are one-line messages for the user (links not followed, ignored files,
    sub-folders without images).
    """

    root: Path
    paths: list[Path]
    labels: list[int]
    class_names: list[str]
    conditional: bool
    ignored: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def printable(text: Union[str, os.PathLike]) -> str:
    """``text`` safe to print, log and store as UTF-8 on one line.

    Bytes that are not UTF-8 (surrogate escapes from the file system) become ``\\xNN``; control
    and other non-printable characters become their escape (``\\n``, ``\\u200b``).
    """
    text = os.fspath(text)
    try:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    except (UnicodeError, TypeError):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def short(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, printable."""
    try:
        return printable(path.relative_to(root).as_posix())
    except ValueError:
        return printable(path)


def listing(items: list[str], limit: int = MAX_LISTED, sep: str = "; ") -> str:
    """The first ``limit`` items joined, then "... and N more"."""
    text = sep.join(items[:limit])
    return text + (f"{sep}... and {len(items) - limit} more" if len(items) > limit else "")


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(path) and path.is_file()


def _inside(real: str, tree: str) -> bool:
    return real == tree or real.startswith(tree.rstrip(os.sep) + os.sep)


class _Walk:
    """One scan's memory of the real folders already read, shared by every class folder."""

    def __init__(self, root: Path):
        self.root = root
        self.tree = os.path.realpath(root)
        self.seen: set[str] = set()
        self.notes: list[str] = []

    def enter(self, path: Path, parent_real: str) -> bool:
        """Whether to read folder ``path`` (listed in the folder whose real path is ``parent_real``)."""
        real = os.path.realpath(path)
        via_link = path.is_symlink()
        if _inside(real, self.tree) and (via_link or not _inside(parent_real, self.tree)):
            self.notes.append(
                f"link {short(path, self.root)} leads back into the data folder ({short(Path(real), Path(self.tree))}); "
                f"not followed, so no image is read twice or under the wrong class"
            )
            return False
        if real in self.seen:
            what = "link" if via_link else "folder"
            self.notes.append(
                f"{what} {short(path, self.root)} leads to {printable(real)}, which is already read "
                f"(a link loop or a second link to it); not followed again"
            )
            return False
        self.seen.add(real)
        return True

    def images_under(self, folder: Path) -> list[Path]:
        """Images anywhere below ``folder`` (hidden files and folders skipped), sorted."""
        found: list[Path] = []
        stack = [(folder, os.path.realpath(folder))]
        while stack:
            here, here_real = stack.pop()
            try:
                with os.scandir(here) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                self.notes.append(f"cannot list folder {short(here, self.root)} ({type(e).__name__}); its images are left out")
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue
                p = Path(e.path)
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if self.enter(p, here_real):
                        stack.append((p, os.path.realpath(p)))
                elif _is_image(p):
                    found.append(p)
        return sorted(found)


def _class_names(dirs: list[Path]) -> list[str]:
    """Printable, distinct names for the class folders ``dirs`` (already sorted)."""
    names: list[str] = []
    for d in dirs:
        name, k = printable(d.name), 2
        while name in names:
            name, k = f"{printable(d.name)} ({k})", k + 1
        names.append(name)
    return names


def labels_from_filenames(paths: list[Path]) -> tuple[list[int], list[str]]:
    """``(labels, class_names)`` read off file names as improved-diffusion's ``image_datasets``
    does: the class is the name before the first ``_`` (``cat_001.png`` -> ``cat``), sorted."""
    names = [p.name.split("_")[0] for p in paths]
    classes = sorted(set(names))
    return [classes.index(n) for n in names], [printable(c) for c in classes]


def scan_folder(root: PathLike, conditional: Optional[bool] = None, from_filenames: bool = False) -> FolderIndex:
    """Index the images of ``root`` (see the module docstring for the layouts).

    ``conditional=None`` decides from the layout (two or more class folders -> conditional);
    ``True`` demands class folders (at least two); ``False`` uses every image and ignores classes.
    ``from_filenames``: a flat folder takes its classes from the file names
    (:func:`labels_from_filenames`); class sub-folders, where there are some, still decide.
    Nothing is decoded here; :func:`difforge.data.folder.load_folder` does that.
    """
    root = Path(root).expanduser()
    shown = printable(root)
    if not root.exists():
        raise DataError(f"image folder {shown} does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"{shown} is a file, not a folder; pass the folder that contains the images")
    walk = _Walk(root)
    walk.seen.add(walk.tree)
    try:
        entries = sorted(p for p in root.iterdir() if not _is_hidden(p))
    except OSError as e:
        raise DataError(f"cannot list image folder {shown} ({type(e).__name__}: {e.strerror}); check its permissions") from None
    loose = [p for p in entries if _is_image(p)]
    dirs = [d for d in entries if d.is_dir() and walk.enter(d, walk.tree)]
    found = [(d, walk.images_under(d)) for d in dirs]
    classes = [(d, imgs) for d, imgs in found if imgs]
    imageless = [short(d, root) for d, imgs in found if not imgs]
    warnings = walk.notes

    if not classes:
        if not loose:
            if not entries:
                raise DataError(f"image folder {shown} is empty; put images ({_EXTS}) in it or in class sub-folders")
            raise DataError(
                f"image folder {shown} contains no images; accepted extensions are {_EXTS} "
                f"(directly in the folder, or in one sub-folder per class)"
            )
        if from_filenames and conditional is not False:
            labels, names = labels_from_filenames(loose)
            if len(names) < 2:
                raise DataError(f"the file names in {shown} name a single class {names[0]!r} (the part before the first "
                                f"'_'); name files CLASS_xxx.png with at least two classes, or train unconditionally")
            return FolderIndex(root, loose, labels, names, True, warnings=warnings)
        if conditional:
            raise DataError(
                f"image folder {shown} has no class sub-folders, so it cannot train a conditional model; "
                f"put each class in its own sub-folder ({shown}/<class>/...), name the files CLASS_xxx.png and pass "
                f"--labels-from-filenames, or pass --no-conditional"
            )
        return FolderIndex(root, loose, [0] * len(loose), [], False, warnings=warnings)

    names = _class_names([d for d, _ in classes])
    if imageless:
        warnings.append(
            f"{len(imageless)} sub-folder(s) of {shown} hold no images ({_EXTS}) and are not classes: "
            f"{listing(imageless, sep=', ')}"
        )
    if loose:
        warnings.append(
            f"{len(loose)} image(s) lying directly in {shown} next to the class folders are not used: "
            f"{listing([short(p, root) for p in loose], sep=', ')}; move them into a class folder to use them"
        )
    if conditional and len(classes) < 2:
        raise DataError(
            f"image folder {shown} has a single class {names[0]!r}: add at least one more class "
            f"sub-folder or pass --no-conditional"
        )
    if conditional is None:
        conditional = len(classes) >= 2
        if not conditional:
            warnings.append(
                f"only one sub-folder of {shown} ({names[0]!r}) holds images, so the model is unconditional "
                f"(no class labels); add a second class folder to train a class-conditional model"
            )
    paths = [p for _, imgs in classes for p in imgs]
    if conditional:
        labels = [k for k, (_, imgs) in enumerate(classes) for _ in imgs]
        return FolderIndex(root, paths, labels, names, True, loose, warnings)
    return FolderIndex(root, paths, [0] * len(paths), [], False, loose, warnings)
