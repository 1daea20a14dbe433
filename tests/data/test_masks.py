import argparse

import numpy as np
import pytest
from PIL import Image

from difforge.cli import data as data_cli
from difforge.data import builtin
from difforge.data.builtin import CLASSES, GOOD, make_image, make_image_and_mask
from difforge.data.masks import load_mask, load_masked, load_mvtec, load_pairs, read_mask
from difforge.errors import DataError


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def _image(seed, size=40, w=None):
    return np.random.default_rng(seed).integers(0, 256, (size, w or size, 3), dtype=np.uint8)


def _box(size, y0, y1, x0, x1, w=None):
    m = np.zeros((size, w or size), dtype=np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


# ----------------------------------------------------------------------------- built-in masks


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("c", range(len(CLASSES)))
def test_builtin_mask_is_exactly_the_painted_pixels(c, channels, monkeypatch):
    rng = lambda: np.random.default_rng([5, c, 2])  # noqa: E731
    image, mask, clean = make_image_and_mask(c, 32, rng(), channels)
    assert np.array_equal(image, make_image(c, 32, rng(), channels))  # the dataset itself is unchanged
    # the image with the defect painted onto a throwaway copy: same rng draws, so same sensor noise
    paint = builtin._DEFECTS[c]
    monkeypatch.setitem(builtin.__dict__, "_DEFECTS", tuple(
        (lambda img, *a, _p=paint: _p(img.copy(), *a)) if k == c else f for k, f in enumerate(builtin._DEFECTS)))
    unpainted = make_image(c, 32, rng(), channels)
    assert np.array_equal(unpainted, clean)
    changed = (image != unpainted).any(axis=-1)
    assert mask.dtype == bool and mask.shape == (32, 32)
    assert np.array_equal(mask, changed)
    assert 0.02 < mask.mean() < 0.6  # a defect, not the whole image
    assert np.array_equal(image[~mask], unpainted[~mask])


def test_builtin_good_is_defect_free_and_has_an_empty_mask():
    image, mask, clean = make_image_and_mask(len(CLASSES), 32, np.random.default_rng([0, 4, 0]))
    assert not mask.any() and np.array_equal(image, clean) and image.std() > 3


def test_data_defects_masks_writes_pairs_that_load(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["data", "defects", str(tmp_path / "d"), "--size", "16", "--per-class", "2", "--masks"])
    assert args.func(args) == 0
    assert "masks" in capsys.readouterr().out
    ds = load_pairs(tmp_path / "d", 16)
    assert ds.class_names == sorted([*CLASSES, GOOD])
    assert len(ds.images) == 10 and ds.masks.shape == (10, 1, 16, 16)
    for i, p in enumerate(ds.paths):
        name = ds.class_names[int(ds.labels[i])]
        c = (list(CLASSES) + [GOOD]).index(name)
        img, mask, _ = make_image_and_mask(c, 16, np.random.default_rng([0, c, int(p.stem[-5:])]))
        assert np.array_equal(ds.images[i].permute(1, 2, 0).numpy(), img)
        assert np.array_equal(ds.masks[i, 0].numpy(), mask)
        assert mask.any() == (name != GOOD)


# ----------------------------------------------------------------------------- layouts


def test_mvtec_layout_loads_labels_and_masks(tmp_path):
    root = tmp_path / "bottle"
    _png(root / "train/good/000.png", _image(0))
    _png(root / "train/good/001.png", _image(1))
    _png(root / "test/good/000.png", _image(2))
    _png(root / "test/crack/000.png", _image(3))
    _png(root / "test/crack/001.png", _image(4))
    _png(root / "test/scratch/000.png", _image(5))
    _png(root / "ground_truth/crack/000_mask.png", _box(40, 0, 20, 0, 20))
    _png(root / "ground_truth/crack/001_mask.png", _box(40, 20, 40, 0, 40))
    _png(root / "ground_truth/scratch/000_mask.png", _box(40, 10, 12, 0, 40))
    ds = load_mvtec(root, 20)
    assert ds.class_names == ["crack", "good", "scratch"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert [p.relative_to(root).as_posix() for p in ds.paths][:2] == ["test/crack/000.png", "test/crack/001.png"]
    m = ds.masks[:, 0].numpy()
    assert m[0, :10, :10].all() and not m[0, 10:].any() and not m[0, :, 10:].any()
    assert m[1, 10:].all() and not m[1, :10].any()
    assert not m[2:5].any()  # good: empty
    assert m[5, 5].all() and m[5].sum() == 20  # a 2-px line at 40 px -> 1 px at 20 px
    assert load_mvtec(root, 20, split="train").labels.tolist() == [0, 0]
    assert load_masked(root, 20, split="test").class_names == ["crack", "good", "scratch"]


def test_pairs_layout_with_and_without_classes(tmp_path):
    flat = tmp_path / "flat"
    _png(flat / "images/a.jpg", _image(0))
    _png(flat / "images/b.png", _image(1))
    _png(flat / "masks/a.png", _box(40, 0, 40, 0, 20))
    _png(flat / "masks/b.png", _box(40, 0, 0, 0, 0))
    ds = load_masked(flat, 40)
    assert ds.class_names == [] and ds.labels.tolist() == [0, 0]
    assert ds.masks[0, 0, :, :20].all() and not ds.masks[0, 0, :, 20:].any() and not ds.masks[1].any()
    assert np.array_equal(ds.images[1].permute(1, 2, 0).numpy(), _image(1))

    cls = tmp_path / "cls"
    _png(cls / "images/dent/x.png", _image(2))
    _png(cls / "images/good/y.png", _image(3))  # a good image may go without a mask
    _png(cls / "masks/dent/x.png", _box(40, 5, 9, 5, 9))
    ds = load_pairs(cls, 40)
    assert ds.class_names == ["dent", "good"] and ds.labels.tolist() == [0, 1]
    assert int(ds.masks[0].sum()) == 16 and not ds.masks[1].any() and ds.mask_paths[1] is None


def test_a_missing_mask_is_named(tmp_path):
    _png(tmp_path / "images/dent/x.png", _image(0))
    _png(tmp_path / "images/dent/y.png", _image(1))
    _png(tmp_path / "masks/dent/x.png", _box(40, 0, 1, 0, 1))
    with pytest.raises(DataError, match=r"1 image\(s\) .*no mask.*y\.png"):
        load_pairs(tmp_path, 20)


# ----------------------------------------------------------------------------- validation


def test_mask_of_another_size_is_one_line_naming_the_file(tmp_path):
    img = _png(tmp_path / "images/a.png", _image(0, 40, 60))
    mask = _png(tmp_path / "masks/a.png", _box(40, 0, 10, 0, 10))  # 40x40, image is 60x40
    with pytest.raises(DataError) as e:
        load_pairs(tmp_path, 20)
    msg = str(e.value)
    assert "\n" not in msg and str(mask) in msg and "40x40" in msg and "60x40" in msg and str(img) in msg


def test_non_binary_mask_is_refused_binary_with_soft_edges_passes(tmp_path):
    grey = np.tile(np.linspace(0, 255, 40), (40, 1))  # a gradient: mostly in the middle band
    path = _png(tmp_path / "grey.png", grey)
    with pytest.raises(DataError) as e:
        read_mask(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "not binary" in str(e.value)
    # anti-aliased / JPEG-noisy edges: a few unclear pixels are fine, thresholded at 127
    soft = _box(40, 10, 30, 10, 30).astype(np.int32)
    soft[10, 10:30] = 140
    soft[30, 10:30] = 100
    soft[:5, :5] = 20
    assert np.array_equal(read_mask(_png(tmp_path / "soft.png", soft)), _box(40, 10, 30, 10, 30) > 0)  # row 10 (140) in, row 30 (100) out
    with pytest.raises(DataError, match="does not exist"):
        read_mask(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read mask"):
        read_mask(bad)


def test_mask_follows_the_image_transform(tmp_path):
    img = _png(tmp_path / "wide.png", _image(0, 40, 80))
    mask = _png(tmp_path / "m.png", _box(40, 0, 40, 20, 40, w=80))  # the left half of the central square
    m = load_mask(mask, 20, image=img)
    assert m[:, :10].all() and not m[:, 10:].any()
