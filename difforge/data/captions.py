"""Captions: one text per training image, for text-conditioned models.

Sources, in order (the first that names an image wins):

1. ``metadata.jsonl`` or ``metadata.csv`` in the data folder, the Hugging Face imagefolder
   convention: one record per image with ``file_name`` (relative to the folder, ``/``-separated)
   and ``text``;
2. a sidecar ``.txt`` next to the image (``scratch_001.png`` -> ``scratch_001.txt``), UTF-8;
3. ``template`` (``--caption-template "a photo of a {class} defect"``), ``{class}`` being the
   image's class name, for images no file describes.

An image without a caption is an error naming the first few files, unless a template is given,
so a model is never silently trained on half-empty text. Captions are Unicode (read as UTF-8,
NFC-normalised, surrounding white space removed).

The built-in defect set's captions are exact: :mod:`difforge.data.builtin_captions` derives
them from what the generator painted.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import DataError
from .scan import listing, printable, short

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CLASS_FIELD = "{class}"


def normalise(text: str) -> str:
    """NFC form with surrounding white space removed and inner runs of white space made one space."""
    return " ".join(unicodedata.normalize("NFC", str(text)).split())


def _records_jsonl(path: Path) -> List[dict]:
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{printable(path)} line {n} is not valid JSON ({e.msg}); one object per line, "
                                f'e.g. {{"file_name": "a.png", "text": "a long scratch"}}') from None
            if not isinstance(rec, dict):
                raise DataError(f"{printable(path)} line {n} is not a JSON object")
            out.append(dict(rec, _line=n))
    return out


def _records_csv(path: Path) -> List[dict]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [dict(rec, _line=n) for n, rec in enumerate(csv.DictReader(f), 2)]


def read_metadata(root: Path) -> Dict[str, str]:
    """``file_name -> caption`` from ``root/metadata.jsonl`` or ``root/metadata.csv`` ({} when neither exists)."""
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if len(found) > 1:
        raise DataError(f"{printable(root)} has both metadata.jsonl and metadata.csv; keep one")
    if not found:
        return {}
    path = found[0]
    try:
        records = _records_jsonl(path) if path.suffix == ".jsonl" else _records_csv(path)
    except UnicodeDecodeError:
        raise DataError(f"{printable(path)} is not UTF-8 text; save it as UTF-8") from None
    out: Dict[str, str] = {}
    for rec in records:
        name, text = rec.get("file_name"), rec.get("text")
        if not isinstance(name, str) or not name or not isinstance(text, str):
            raise DataError(f"{printable(path)} line {rec['_line']} needs the fields file_name and text (both text), "
                            f"got {', '.join(k for k in rec if k != '_line') or 'none'}")
        key = name.replace("\\", "/")
        out[key[2:] if key.startswith("./") else key] = normalise(text)
    return out


def _sidecar(path: Path) -> Optional[str]:
    txt = path.with_suffix(".txt")
    if not txt.is_file():
        return None
    try:
        return normalise(txt.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise DataError(f"caption file {printable(txt)} is not UTF-8 text; save it as UTF-8") from None


def from_template(template: str, class_name: Optional[str]) -> str:
    """``template`` with ``{class}`` replaced by the class name (underscores as spaces)."""
    if CLASS_FIELD in template and not class_name:
        raise DataError(f"--caption-template {template!r} names {CLASS_FIELD} but the data has no classes; "
                        f"drop {CLASS_FIELD} from it or use class sub-folders")
    return normalise(template.replace(CLASS_FIELD, (class_name or "").replace("_", " ")))


def read_captions(root, paths: Sequence[Path], class_names: Sequence[str] = (), labels: Sequence[int] = (),
                  template: Optional[str] = None) -> List[str]:
    """One caption per image of ``paths`` (see the module docstring for the sources and their order)."""
    root = Path(root)
    meta = read_metadata(root)
    out: List[str] = []
    missing: List[Path] = []
    for i, path in enumerate(paths):
        try:
            key = Path(path).relative_to(root).as_posix()
        except ValueError:
            key = Path(path).name
        text = meta.get(key)
        if text is None:
            text = _sidecar(Path(path))
        if text is None and template is not None:
            text = from_template(template, class_names[labels[i]] if class_names else None)
        if text is None:
            missing.append(Path(path))
            text = ""
        out.append(text)
    if missing:
        names = listing([short(p, root) for p in missing], sep=", ")
        raise DataError(
            f"{len(missing)} of {len(paths)} images in {printable(root)} have no caption ({names}); add them to "
            f"metadata.jsonl (file_name, text), write a .txt beside each image, or pass "
            f'--caption-template "a photo of a {CLASS_FIELD} defect"'
        )
    return out


def write_metadata(root, records: Sequence[dict]) -> Path:
    """``root/metadata.jsonl`` from ``records`` (each with ``file_name`` and ``text``), atomically, UTF-8."""
    from ..atomic import atomic_write

    path = Path(root) / "metadata.jsonl"
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


__all__ = ["METADATA_FILES", "from_template", "normalise", "read_captions", "read_metadata", "write_metadata"]
