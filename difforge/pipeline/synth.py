"""Defects onto good images in bulk: placement of masks and one-item generation, reproducible per seed.

Item ``i`` of a run with seed ``S`` uses seed ``S + i`` for everything: which good image, which
mask and how it is placed (a numpy generator seeded ``[seed, 1]``), which class (when not given)
and the sampler's noise (the pipeline's per-image torch generator). Its manifest line
(:mod:`difforge.data.manifest`) records the seed, the settings and the placement, so
:func:`regenerate` makes the same image again bit for bit from the line alone.

Masks come from a bank of mask files (``--masks MDIR``; a sub-folder named after the class is used
for that class when there is one), each placed with a random flip, quarter rotation and position
(its bounding box stays inside the image), or from generated shapes (``--mask-shapes auto``:
rectangles, ellipses and thin scratches). With ``jitter`` (``--mask-jitter``) a bank mask is also
scaled by 0.7-1.4 and turned by any angle: with one or two real masks per class, flips and quarter
turns alone give only eight shapes, and a detector trained on them learns those shapes.

Methods (``method``): ``mask-conditioned`` (a model trained with --mask-conditioning, one blended
pass), ``joint`` (a joint-mask model whose mask channel is known, one blended pass), ``repaint`` or
``blend`` (any model, :mod:`difforge.pipeline.inpaint`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..data.manifest import make_line
from ..data.masks import read_mask, resize_mask
from ..data.scan import IMAGE_EXTENSIONS
from ..errors import UserError
from .config import SampleConfig, interval_from_json, interval_json

METHODS = ("mask-conditioned", "joint", "repaint", "blend")
SHAPES = ("rect", "ellipse", "scratch")


def model_method(pipe) -> str:
    """The method a model is made for: its own mask inputs/outputs, else RePaint."""
    if pipe.meta.get("inputs", {}).get("mask_conditioning"):
        return "mask-conditioned"
    return "joint" if pipe.joint_mask else "repaint"


def check_method(pipe, method: str) -> str:
    """``method`` if ``pipe``'s model can do it, else one line saying which model it needs."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r} (--method); choose one of {', '.join(METHODS)}")
    conditioned = bool(pipe.meta.get("inputs", {}).get("mask_conditioning"))
    if method == "mask-conditioned" and not conditioned:
        raise UserError(f"--method mask-conditioned needs a model trained with --mask-conditioning; {pipe.source or 'this model'} "
                        f"is not one: use --method repaint or blend")
    if method == "joint" and not pipe.joint_mask:
        raise UserError(f"--method joint needs a model trained with --joint-mask; {pipe.source or 'this model'} is not one: "
                        f"use --method repaint or blend")
    return method


# -- masks ------------------------------------------------------------------------------------------
def image_files(folder) -> List[Path]:
    """Image files under ``folder`` (recursively), sorted; one line when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"folder {folder} does not exist; check the path")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise UserError(f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


@dataclass
class MaskBank:
    """Mask files by class sub-folder (``""``: every file); :meth:`files_for` picks a class's own when it has any."""

    root: Path
    by_class: Dict[str, List[Path]] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, root) -> "MaskBank":
        root = Path(root)
        files = image_files(root)
        bank = cls(root, {"": files})
        for p in files:
            if p.parent != root:
                bank.by_class.setdefault(p.relative_to(root).parts[0], []).append(p)
        return bank

    def files_for(self, class_name: Optional[str]) -> List[Path]:
        return self.by_class.get(class_name or "", []) or self.by_class[""]


def load_bank_mask(path, size: int) -> np.ndarray:
    """A mask file as bool (size, size) (validated by :func:`difforge.data.masks.read_mask`)."""
    from ..errors import DataError

    try:
        return resize_mask(read_mask(path), size)
    except DataError as e:
        raise UserError(str(e)) from None


JITTER_SCALE = (0.7, 1.4)  # --mask-jitter: scale factors, drawn log-uniformly, and any angle in [-45, 45) degrees


def _jittered(m: np.ndarray, scale: float, angle: float) -> np.ndarray:
    """``m`` turned by ``angle`` degrees and scaled by ``scale`` (bilinear, threshold at half), cropped to its
    bounding box; the unjittered crop when nothing is left (a 1 px line can vanish at a small scale)."""
    from PIL import Image

    img = Image.fromarray(m.astype(np.uint8) * 255).rotate(angle, resample=Image.BILINEAR, expand=True)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    out = np.asarray(img) >= 128
    out = out if out.any() else m
    ys, xs = np.nonzero(out)
    return out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def draw_placement(rng: np.random.Generator, size: int, bank: Optional[MaskBank], class_name: Optional[str],
                   jitter: bool = False) -> Dict[str, Any]:
    """Where and how item's mask goes: a bank file with flips / rotation (with ``jitter`` also a scale and
    an angle) / position, or a shape. Without ``jitter`` the draws are those of runs made before it existed."""
    if bank is None:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        u = [float(v) for v in rng.random(5)]
        return {"kind": "shape", "shape": shape, "u": u}
    files = bank.files_for(class_name)
    order = rng.permutation(len(files))
    for k in order[:32]:  # an empty mask file is skipped (the next draw is still a function of the seed)
        src = files[int(k)]
        m = load_bank_mask(src, size)
        if m.any():
            break
    else:
        raise UserError(f"the masks drawn from {bank.root} are empty; give masks with white defect pixels")
    flip_h, flip_v, rot = bool(rng.integers(2)), bool(rng.integers(2)), int(rng.integers(4))
    placement = {"kind": "mask", "source": str(src), "flip_h": flip_h, "flip_v": flip_v, "rot90": rot}
    m = _transform(m, flip_h, flip_v, rot)
    if jitter:
        lo, hi = JITTER_SCALE
        placement.update(scale=float(math.exp(rng.uniform(math.log(lo), math.log(hi)))), angle=float(rng.uniform(-45.0, 45.0)))
        m = _jittered(m, placement["scale"], placement["angle"])
    h, w = (min(v, size) for v in _bbox_size(m))
    return dict(placement, top=int(rng.integers(size - h + 1)), left=int(rng.integers(size - w + 1)))


def place_mask(placement: Dict[str, Any], size: int) -> np.ndarray:
    """The bool (size, size) mask a placement describes (the same array every time)."""
    if placement["kind"] == "shape":
        return shape_mask(placement["shape"], placement["u"], size)
    m = _transform(load_bank_mask(placement["source"], size), placement["flip_h"], placement["flip_v"], placement["rot90"])
    if "scale" in placement:  # --mask-jitter
        m = _jittered(m, placement["scale"], placement["angle"])
    ys, xs = np.nonzero(m)
    crop = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if crop.shape[0] > size or crop.shape[1] > size:  # scaled past the image: its centre
        y0, x0 = max(0, (crop.shape[0] - size) // 2), max(0, (crop.shape[1] - size) // 2)
        crop = crop[y0 : y0 + size, x0 : x0 + size]
    out = np.zeros((size, size), dtype=bool)
    top, left = placement["top"], placement["left"]
    out[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    return out


def shape_mask(shape: str, u: List[float], size: int) -> np.ndarray:
    """A generated defect shape from five uniforms: centre in [0.2, 0.8]; a rectangle or ellipse with half
    sides in [0.06, 0.22] of the image, or a scratch (a line 1-2 px wide, length 0.3-0.7, any angle)."""
    c = (np.arange(size) + 0.5) / size
    yy, xx = c[:, None], c[None, :]
    cy, cx = 0.2 + 0.6 * u[0], 0.2 + 0.6 * u[1]
    if shape == "scratch":
        angle, half = math.pi * u[2], 0.15 + 0.2 * u[3]
        width = (1.0 + u[4]) / size
        dy, dx = yy - cy, xx - cx
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        m = (np.abs(along) <= half) & (np.abs(across) <= width / 2 + 0.5 / size)
    else:
        ry, rx = 0.06 + 0.16 * u[2], 0.06 + 0.16 * u[3]
        dy, dx = (yy - cy) / ry, (xx - cx) / rx
        m = (dy**2 + dx**2 <= 1.0) if shape == "ellipse" else ((np.abs(dy) <= 1.0) & (np.abs(dx) <= 1.0))
    if not m.any():
        m[int(cy * size), int(cx * size)] = True
    return m


def _transform(m: np.ndarray, flip_h: bool, flip_v: bool, rot: int) -> np.ndarray:
    m = m[:, ::-1] if flip_h else m
    m = m[::-1] if flip_v else m
    return np.ascontiguousarray(np.rot90(m, rot))


def _bbox_size(m: np.ndarray):
    ys, xs = np.nonzero(m)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


# -- one item -------------------------------------------------------------------------------------------
@dataclass
class SynthSettings:
    """The settings every item of a run shares (recorded in each manifest line)."""

    method: str
    config: SampleConfig
    resample: int = 10
    jump: int = 10

    def inpaint_kwargs(self) -> Dict[str, Any]:
        inner = "repaint" if self.method == "repaint" else "blend"
        return dict(method=inner, resample=self.resample, jump=self.jump, config=self.config)


def generate_item(pipe, background: np.ndarray, mask: np.ndarray, class_name: Optional[str], seed: int,
                  settings: SynthSettings) -> np.ndarray:
    """uint8 (H, W, C): ``background`` outside ``mask`` (bit for bit), the model's ``class_name`` inside."""
    out = pipe.inpaint(background, mask, num=1, class_label=class_name, seeds=[seed], **settings.inpaint_kwargs())
    return out.images[0].numpy()


def draw_item(rng: np.random.Generator, backgrounds: List[Path], classes: List[str], class_name: Optional[str]):
    """(background index, class) of an item: the class given, else a random non-``good`` class of the model."""
    b = int(rng.integers(len(backgrounds)))
    if class_name is None and classes:
        pool = [c for c in classes if c != "good"] or classes
        class_name = pool[int(rng.integers(len(pool)))]
    return b, class_name


def item_line(pipe, *, index: int, seed: int, class_name, background: Path, placement, settings: SynthSettings,
              model_name: str, model_sha256: str, seconds: float, size) -> Dict[str, Any]:
    stem = f"{index:06d}"
    return make_line(f"images/{stem}.png", mask=f"masks/{stem}.png", size=size, seed=seed, method=settings.method,
                     class_name=class_name, model=model_name, model_sha256=model_sha256, sampler=settings.config.sampler,
                     steps=len(pipe.timesteps(settings.config)), cfg=float(pipe.with_default_cfg(settings.config).cfg), background=str(background),
                     placement=placement, seconds=seconds, resample=settings.resample, jump=settings.jump,
                     sample_steps=settings.config.steps, cfg_interval=interval_json(pipe.with_default_cfg(settings.config).cfg_interval))


def settings_of(line: Dict[str, Any]) -> SynthSettings:
    """The :class:`SynthSettings` a manifest line was made with."""
    # a line without cfg_interval was written before guidance had an interval: it guided every step
    config = SampleConfig(sampler=line["sampler"], steps=line.get("sample_steps", line["steps"]), cfg=line["cfg"],
                          cfg_interval=interval_from_json(line.get("cfg_interval")))
    return SynthSettings(line["method"], config, int(line.get("resample", 10)), int(line.get("jump", 10)))


def regenerate(line: Dict[str, Any], root, model=None, pipe=None) -> np.ndarray:
    """The image of one manifest line again, bit for bit: uint8 (H, W, C).

    ``root``: the manifest's folder; ``model``: the model file (default: ``root/<line["model"]>``),
    or a loaded ``pipe``. A model whose sha256 differs from the line's is refused.
    """
    from ..modelfile import file_sha256
    from .core import Pipeline
    from .interpolate import load_source

    if pipe is None:
        model = Path(model) if model is not None else Path(root) / line["model"]
        if line.get("model_sha256") and file_sha256(model) != line["model_sha256"]:
            raise UserError(f"{model} is not the model of this manifest line (sha256 differs); give the model file it names")
        pipe = Pipeline.from_checkpoint(model)
    if line["placement"] is None or line["background"] is None:
        raise UserError(f"{line['image']}: only synth lines (with a background and a placement) can be regenerated")
    size = pipe.image_size
    mask = place_mask(line["placement"], size)
    background = load_source(pipe, line["background"])
    return generate_item(pipe, background, mask, line["class"], int(line["seed"]), settings_of(line))


def synthesize(pipe, model_file, good: List[Path], out, num: int, *, settings: SynthSettings, bank: Optional[MaskBank] = None,
               class_name: Optional[str] = None, seed: int = 0, progress: bool = False, jitter: bool = False) -> Dict[str, int]:
    """Write ``num`` items into ``out`` (``images/``, ``masks/``, ``manifest.jsonl``); items the manifest
    already lists with both files present are skipped (a rerun resumes). ``jitter``: bank masks also scaled
    and turned (:func:`draw_placement`). Returns counts made / skipped."""
    from tqdm import tqdm

    from ..data.io import save_image
    from ..data.manifest import ManifestWriter
    from ..modelfile import file_sha256
    from .interpolate import load_source

    if class_name is not None:
        class_name = pipe.class_names[pipe.resolve_class(class_name)] if pipe.class_names else pipe.resolve_class(class_name)
    out = Path(out)
    writer = ManifestWriter(out)
    sha, size = file_sha256(model_file), pipe.image_size
    made = skipped = 0
    for i in tqdm(range(num), disable=not progress, desc=f"synth {settings.method}", unit="image", dynamic_ncols=True):
        stem = f"{i:06d}"
        if f"images/{stem}.png" in writer.done and (out / "images" / f"{stem}.png").is_file() and (out / "masks" / f"{stem}.png").is_file():
            skipped += 1
            continue
        item_seed = seed + i
        rng = np.random.default_rng([item_seed, 1])
        b, cls = draw_item(rng, good, pipe.class_names, class_name)
        placement = draw_placement(rng, size, bank, cls, jitter)
        mask = place_mask(placement, size)
        t0 = time.perf_counter()
        image = generate_item(pipe, load_source(pipe, good[b]), mask, cls, item_seed, settings)
        seconds = time.perf_counter() - t0
        save_image(image, out / "images" / f"{stem}.png")
        save_image(mask.astype(np.uint8)[..., None] * 255, out / "masks" / f"{stem}.png")
        writer.add(item_line(pipe, index=i, seed=item_seed, class_name=cls, background=good[b].resolve(), placement=placement,
                             settings=settings, model_name=Path(model_file).name, model_sha256=sha, seconds=seconds, size=(size, size)))
        made += 1
    return {"made": made, "skipped": skipped}


__all__ = ["METHODS", "MaskBank", "SynthSettings", "check_method", "draw_item", "draw_placement", "generate_item",
           "image_files", "item_line", "model_method", "place_mask", "regenerate", "settings_of", "shape_mask", "synthesize"]
