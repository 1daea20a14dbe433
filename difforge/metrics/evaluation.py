"""Evaluation end to end: image sources -> features -> metrics -> one flat dict.

:func:`evaluate` is what the trainer calls; ``difforge eval`` calls :func:`prepare` and
:func:`compute_metrics` itself to show progress and save references. Metric names:

=========  ==================================================  ======================
``fid``    Fréchet distance of pool features                   ``fid``
``sfid``   Fréchet distance of spatial features (Inception)    ``sfid``
``kid``    kernel inception distance, mean and std            ``kid``, ``kid_std``
``is``     Inception Score of the fake images, mean and std   ``is``, ``is_std``
``pr``     improved precision and recall (k = 3)              ``precision``, ``recall``
=========  ==================================================  ======================

When both sides carry the same class names (class sub-folders, or a reference made from one),
FID and KID are also computed per class under ``per_class``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from ..errors import UserError
from .features import extract
from .fid import frechet_distance
from .inception_score import inception_score
from .kid import kernel_inception_distance
from .precision_recall import precision_recall
from .reference import FeatureSet, is_reference_file, merge, read_reference
from .sources import ImageSource, array_source, folder_source

METRICS = ("fid", "sfid", "kid", "is", "pr")
# what each metric needs of each side: kind -> "stats" (a Gaussian is enough) or "features"
_REAL_NEEDS = {"fid": {"pool": "stats"}, "sfid": {"spatial": "stats"}, "kid": {"pool": "features"}, "is": {}, "pr": {"pool": "features"}}
_FAKE_NEEDS = {**_REAL_NEEDS, "is": {"logits": "features"}}
_OUTPUT_OF = {"fid": "pool", "sfid": "spatial", "kid": "pool", "is": "logits", "pr": "pool"}

Source = Union[str, os.PathLike, np.ndarray, FeatureSet, ImageSource]


def parse_metrics(text: Optional[Union[str, Sequence[str]]], extractor) -> List[str]:
    """``"fid,kid"`` -> ["fid", "kid"]; None / ``"all"``: every metric the extractor supports."""
    if text is None or text == "all":
        return [m for m in METRICS if _OUTPUT_OF[m] in extractor.outputs]
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise UserError(f"--metrics {text!r}: unknown metric {', '.join(bad) or '(none)'}; choose from {', '.join(METRICS)}")
    for m in names:
        if _OUTPUT_OF[m] not in extractor.outputs:
            raise UserError(
                f"metric {m} needs the Inception network's {_OUTPUT_OF[m]} output, which the extractor "
                f"{extractor.name} does not have; use --features inception or drop {m} from --metrics"
            )
    return list(dict.fromkeys(names))


def needs(metrics: Iterable[str], side: str, per_class: bool = False) -> Dict[str, str]:
    """{kind: "stats" | "features"} one side must provide for ``metrics``."""
    table = _REAL_NEEDS if side == "real" else _FAKE_NEEDS
    out: Dict[str, str] = {}
    for m in metrics:
        for kind, level in table[m].items():
            out[kind] = "features" if "features" in (level, out.get(kind)) else level
    if per_class and "pool" in out:
        out["pool"] = "features"
    return out


def _satisfied(fs: FeatureSet, need: Dict[str, str]) -> bool:
    return all(getattr(fs, k) is not None or (lvl == "stats" and k in fs.stats) for k, lvl in need.items())


def open_source(source, image_size: Optional[int] = None, name: str = "images") -> Union[ImageSource, FeatureSet, Path]:
    """A path, array or feature set -> an ImageSource, or the Path of a reference file (read later)."""
    if isinstance(source, (ImageSource, FeatureSet)):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir():
            return folder_source(path, image_size)
        if path.suffix == ".npz":
            if not path.is_file():
                raise UserError(f"{path} does not exist; check the path")
            if is_reference_file(path):
                return path
            from ..data.io import load_npz

            images, labels = load_npz(path)
            return array_source(images, name=str(path))
        if not path.exists():
            raise UserError(f"{path} does not exist; give an image folder or an .npz file")
        raise UserError(f"{path} is neither an image folder nor an .npz file (arr_0 images, or a reference)")
    return array_source(source, name=name)


def prepare(
    source,
    extractor,
    need: Dict[str, str],
    *,
    image_size: Optional[int] = None,
    batch_size: int = 50,
    progress: bool = False,
    desc: str = "features",
) -> FeatureSet:
    """Features of ``source`` (folder, .npz, uint8 NHWC array, ImageSource or FeatureSet) for ``need``."""
    src = open_source(source, image_size)
    stored = None
    if isinstance(src, FeatureSet):
        if src.extractor != extractor.name:
            raise UserError(f"{src.source or 'the reference'} was computed with {src.extractor}, not {extractor.name}")
        stored, src = src, None
    elif isinstance(src, Path):
        stored, has_images = read_reference(src, extractor.name)
        if _satisfied(stored, need):
            return stored
        if not has_images:
            missing = [k for k in need if not _satisfied(stored, {k: need[k]})]
            raise UserError(
                f"reference {src} has no {'/'.join(missing)} {'features' if 'pool' in missing else 'statistics'} for the "
                f"metrics asked for; rebuild it from the images with --save-ref, or drop those metrics"
            )
        from ..data.io import load_npz

        images, _ = load_npz(src)
        src = array_source(images, name=str(src))
    if src is None:
        if not _satisfied(stored, need):
            raise UserError(f"{stored.source or 'the reference'} lacks the {', '.join(need)} features the metrics need")
        return stored
    kinds = tuple(k for k in ("pool", "spatial", "logits") if k in need)
    arrays = extract(extractor, src.batches(batch_size), kinds, total=src.count, desc=desc, progress=progress)
    fs = FeatureSet(extractor.name, src.count, src.name, labels=src.labels, class_names=list(src.class_names), **arrays)
    return merge(stored, fs) if stored is not None else fs


def compute_metrics(
    real: FeatureSet,
    fake: FeatureSet,
    metrics: Sequence[str],
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    pr_k: int = 3,
    seed: int = 0,
    per_class: Optional[bool] = None,
) -> dict:
    """The metrics of ``fake`` against ``real`` as a flat dict (plus ``per_class`` when both are labelled alike)."""
    out: dict = {"num_real": real.count or None, "num_fake": fake.count, "extractor": fake.extractor}
    with _as_user_error():
        if "fid" in metrics:
            out["fid"] = frechet_distance(*real.gaussian("pool"), *fake.gaussian("pool"))
        if "sfid" in metrics:
            out["sfid"] = frechet_distance(*real.gaussian("spatial"), *fake.gaussian("spatial"))
        if "kid" in metrics:
            out["kid"], out["kid_std"] = kernel_inception_distance(real.pool, fake.pool, kid_subsets, kid_subset_size, seed)
        if "is" in metrics:
            out["is"], out["is_std"] = inception_score(fake.logits, is_splits)
        if "pr" in metrics:
            out["precision"], out["recall"] = precision_recall(real.pool, fake.pool, k=pr_k)
        if per_class is not False and same_classes(real, fake):
            out["per_class"] = _per_class(real, fake, metrics, kid_subsets, kid_subset_size, seed)
    return out


@contextlib.contextmanager
def _as_user_error():
    """Too few images or mismatched features reach the numerics as ValueError: say so in one line."""
    try:
        yield
    except ValueError as e:
        raise UserError(f"cannot compute the metrics: {e}") from e


def same_classes(real: FeatureSet, fake: FeatureSet) -> bool:
    return (
        bool(real.class_names)
        and sorted(real.class_names) == sorted(fake.class_names)
        and real.pool is not None
        and fake.pool is not None
        and real.labels is not None
        and fake.labels is not None
    )


def _per_class(real: FeatureSet, fake: FeatureSet, metrics, kid_subsets, kid_subset_size, seed) -> Dict[str, dict]:
    rows = {}
    for name in real.class_names:
        r, f = real.of_class(name), fake.of_class(name)
        row: dict = {"num_real": r.count, "num_fake": f.count}
        ok = r.count >= 2 and f.count >= 2
        if "fid" in metrics:
            row["fid"] = frechet_distance(*r.gaussian(), *f.gaussian()) if ok else None
        if "kid" in metrics:
            row["kid"], row["kid_std"] = kernel_inception_distance(r.pool, f.pool, kid_subsets, kid_subset_size, seed) if ok else (None, None)
        rows[name] = row
    return rows


# ----------------------------------------------------------------------------- the trainer's entry

_REFERENCE_CACHE: Dict[tuple, FeatureSet] = {}
_CACHE_SIZE = 4


def _cache_key(source, extractor, image_size, need) -> Optional[tuple]:
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source).expanduser().resolve()
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size, extractor.name, image_size, tuple(sorted(need.items())))


def evaluate(
    real_source: Source,
    fake_images_uint8_nhwc,
    metrics: Union[str, Sequence[str], None] = ("fid",),
    extractor=None,
    *,
    fake_labels=None,
    class_names: Optional[Sequence[str]] = None,
    batch_size: int = 50,
    progress: bool = False,
    **options,
) -> dict:
    """Evaluate generated images against a reference; returns the dict of :func:`compute_metrics`.

    ``real_source``: an image folder, an ``.npz`` (images or reference), a uint8 NHWC array, or a
    :class:`FeatureSet` from :func:`prepare` (the cheapest: compute it once and pass it every time).
    A path's features are also cached in this process, keyed by path, modification time,
    extractor and size, so calling this every N training steps reads the real images only once.
    Real folders are loaded at the fake images' resolution. ``extractor``: from
    :func:`features.load_extractor` (default: the Inception network, whose weights must be on
    disk); build it once too. ``fake_labels`` with ``class_names`` enable per-class results.
    ``options``: ``kid_subsets``, ``kid_subset_size``, ``is_splits``, ``pr_k``, ``seed``.
    """
    if extractor is None:
        from .features import load_extractor

        extractor = load_extractor("inception")
    metrics = parse_metrics(metrics, extractor)
    fake_src = array_source(fake_images_uint8_nhwc, fake_labels, class_names, name="generated images")
    per_class = bool(class_names) and fake_labels is not None
    need_real = needs(metrics, "real", per_class)
    key = _cache_key(real_source, extractor, fake_src.image_size, need_real)
    real = _REFERENCE_CACHE.get(key) if key else None
    if real is None:
        real = prepare(real_source, extractor, need_real, image_size=fake_src.image_size, batch_size=batch_size, progress=progress, desc="real")
        if key:
            while len(_REFERENCE_CACHE) >= _CACHE_SIZE:
                _REFERENCE_CACHE.pop(next(iter(_REFERENCE_CACHE)))
            _REFERENCE_CACHE[key] = real
    fake = prepare(fake_src, extractor, needs(metrics, "fake", per_class), batch_size=batch_size, progress=progress, desc="generated")
    return compute_metrics(real, fake, metrics, **options)
