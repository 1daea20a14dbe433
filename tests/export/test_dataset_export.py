"""difforge export: every format read back by independent readers (pycocotools, scikit-image, the
MVTec loader) equals the source masks; the manifest covers every file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from difforge.data.manifest import read_manifest
from difforge.data.masks import load_mvtec
from difforge.export.datasets import export_dataset
from tests.export.datasets_kit import pairs_source, read_mask_png, synth_source

measure = pytest.importorskip("skimage.measure")
cmask = pytest.importorskip("pycocotools.mask")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("export_src")
    return {"pairs": pairs_source(base / "pairs"), "synth": synth_source(base / "synth")}


def _source_mask(line) -> np.ndarray:
    h, w = line["size"]
    m = line["origin"]["mask"]
    return read_mask_png(Path(m)) if m else np.zeros((h, w), bool)


def _reference_boxes(mask: np.ndarray) -> list:
    """Boxes of the 8-connected components by scikit-image (independent of the exporter's scipy labelling)."""
    props = measure.regionprops(measure.label(mask, connectivity=2))
    return sorted([p.bbox[1], p.bbox[0], p.bbox[3], p.bbox[2]] for p in props)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


def _lines(out: Path) -> list:
    return read_manifest(out / "manifest.jsonl")


def test_coco_rle_decodes_to_the_source_masks(sources, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "coco"
    export_dataset(sources["synth"], "coco", out, real=sources["pairs"], segmentation="rle", split="train=1")
    coco = COCO(str(out / "annotations" / "instances_train.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert sorted(names.values()) == ["blob", "crack", "inclusion", "patch", "scratch"]
    by_file = {img["file_name"]: img["id"] for img in coco.loadImgs(coco.getImgIds())}
    lines = _lines(out)
    assert len(by_file) == len(lines) == 4 + 5 * 3
    for line in lines:
        src = _source_mask(line)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=by_file[Path(line["image"]).name]))
        union = np.zeros_like(src)
        for a in anns:
            m = coco.annToMask(a).astype(bool)
            assert not (union & m).any()  # instances are disjoint components
            union |= m
            assert names[a["category_id"]] == line["class"] and a["area"] == m.sum()
        assert np.array_equal(union, src), line["image"]  # exact, holes included
        assert sorted([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns) == _reference_boxes(src)
        if line["class"] == "good":
            assert anns == []


def test_coco_polygons_rasterise_back(sources, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "coco"
    export_dataset(sources["pairs"], "coco", out, split="train=0.5,val=0.5")
    for split in ("train", "val"):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        by_file = {img["file_name"]: img["id"] for img in coco.loadImgs(coco.getImgIds())}
        for line in (ln for ln in _lines(out) if ln["split"] == split):
            src = _source_mask(line)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=by_file[Path(line["image"]).name]))
            assert all(isinstance(a["segmentation"], list) for a in anns)
            union = np.zeros_like(src)
            for a in anns:
                union |= coco.annToMask(a).astype(bool)
            if src.any():
                assert _iou(union, src) >= 0.95, line["image"]


def test_yolo_boxes_are_the_mask_components(sources, tmp_path):
    out = tmp_path / "yolo"
    export_dataset(sources["synth"], "yolo", out, real=sources["pairs"])
    data = yaml.safe_load((out / "data.yaml").read_text())
    names = data["names"]
    assert data["train"] == "images/train" and data["val"] == "images/val" and data["nc"] == len(names) == 5
    for line in _lines(out):
        src = _source_mask(line)
        h, w = src.shape
        rows = [r.split() for r in (out / line["label"]).read_text().splitlines()]
        got = []
        for r in rows:
            assert len(r) == 5 and names[int(r[0])] == line["class"]
            cx, cy, bw, bh = map(float, r[1:])
            assert all(0.0 <= v <= 1.0 for v in (cx, cy, bw, bh))
            got.append([round((cx - bw / 2) * w), round((cy - bh / 2) * h), round((cx + bw / 2) * w), round((cy + bh / 2) * h)])
        assert sorted(got) == _reference_boxes(src) == sorted(line["boxes"]), line["image"]
        if line["class"] == "good":
            assert rows == [] and line["mask"] is None


def test_yolo_seg_polygons_rasterise_back(sources, tmp_path):
    out = tmp_path / "yseg"
    export_dataset(sources["synth"], "yolo-seg", out, real=sources["pairs"])
    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    for line in _lines(out):
        src = _source_mask(line)
        h, w = src.shape
        polys = []
        for r in (out / line["label"]).read_text().splitlines():
            k, *xy = r.split()
            assert names[int(k)] == line["class"] and len(xy) >= 6 and len(xy) % 2 == 0
            pts = np.array(xy, dtype=float).reshape(-1, 2)
            assert pts.min() >= 0 and pts.max() <= 1
            polys.append((pts * [w, h]).ravel().tolist())
        if not src.any():
            assert polys == []
            continue
        back = cmask.decode(cmask.merge(cmask.frPyObjects(polys, h, w))).astype(bool)
        hole_free = src | _filled_holes(src)
        assert _iou(back, hole_free) >= 0.95, line["image"]


def _filled_holes(mask):
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def test_mvtec_export_loads_back_with_the_masks_loader(sources, tmp_path):
    out = tmp_path / "mvtec"
    export_dataset(sources["pairs"], "mvtec", out, split="train=0.67,val=0.33")
    assert sorted(p.name for p in (out / "test").iterdir()) == ["crack", "good", "inclusion", "patch", "scratch"]
    assert {ln["split"] for ln in _lines(out) if ln["class"] != "good"} == {"test"}
    loaded = load_mvtec(out, 24)
    by_path = {ln["image"]: ln for ln in _lines(out)}
    assert len(loaded.paths) == len(by_path) == 15
    for path, mask, label in zip(loaded.paths, loaded.masks, loaded.labels):
        line = by_path[path.relative_to(out).as_posix()]
        assert loaded.class_names[label] == line["class"]
        assert np.array_equal(mask[0].numpy(), _source_mask(line))


@pytest.mark.parametrize("fmt", ["mvtec", "yolo", "yolo-seg", "coco", "imagefolder"])
def test_every_exported_file_has_a_manifest_line(sources, tmp_path, fmt):
    out = tmp_path / fmt
    export_dataset(sources["synth"], fmt, out, real=sources["pairs"])
    lines = _lines(out)
    listed = {p for ln in lines for p in (ln["image"], ln["mask"], ln["label"]) if p}
    index = {"manifest.jsonl", "data.yaml"} | {f"annotations/instances_{s}.json" for s in ("train", "val")}
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files - index == listed - index and all((out / p).is_file() for p in listed)
    assert len(lines) == 4 + 15 and len({ln["image"] for ln in lines}) == len(lines)
    syn = [ln for ln in lines if ln["source"] == "synthetic"]
    assert len(syn) == 4 and all(ln["model_sha256"] == "ab" * 32 and ln["steps"] == 5 for ln in syn)
    assert sorted(ln["seed"] for ln in syn) == [100, 101, 102, 103]
    assert all(Path(ln["background"]).is_absolute() for ln in syn)  # still findable from the export
    for ln in syn:  # the image bytes travel unchanged
        assert (out / ln["image"]).read_bytes() == Path(ln["origin"]["image"]).read_bytes()
    assert {ln["source"] for ln in lines} == {"synthetic", "real"}
    json.dumps(lines)


def test_synthetic_images_stay_out_of_val_and_test_by_default(sources, tmp_path):
    """With real images in the export, val / test are real only (scores on real defects);
    --synthetic-split all splits the synthetic ones too."""
    export_dataset(sources["synth"], "yolo", tmp_path / "a", real=sources["pairs"], split="train=0.5,val=0.5")
    lines = _lines(tmp_path / "a")
    assert {ln["split"] for ln in lines if ln["source"] == "synthetic"} == {"train"}
    real = [ln["split"] for ln in lines if ln["source"] == "real"]
    assert real.count("val") >= 5 and real.count("train") >= 5
    export_dataset(sources["synth"], "yolo", tmp_path / "b", real=sources["pairs"], split="train=0.5,val=0.5", synthetic_split="all")
    assert {ln["split"] for ln in _lines(tmp_path / "b") if ln["source"] == "synthetic"} == {"train", "val"}
    export_dataset(sources["synth"], "yolo", tmp_path / "c", split="train=0.5,val=0.5")  # synthetic only: still split
    assert {ln["split"] for ln in _lines(tmp_path / "c")} == {"train", "val"}
