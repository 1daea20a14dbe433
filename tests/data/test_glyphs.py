"""The built-in glyph dataset: deterministic, grey, ten distinguishable mirror-asymmetric classes."""

import numpy as np
from PIL import Image

from difforge.cli.main import main
from difforge.data.glyphs import GLYPHS, generate_glyphs, make_glyph


def test_deterministic_and_grey():
    a, la, names = generate_glyphs(size=16, per_class=3, seed=5)
    b, _, _ = generate_glyphs(size=16, per_class=3, seed=5)
    c, _, _ = generate_glyphs(size=16, per_class=3, seed=6)
    assert a.shape == (30, 16, 16, 1) and a.dtype == np.uint8 and names == list(GLYPHS)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert list(np.bincount(la)) == [3] * 10


def test_classes_are_shapes_and_mirror_changes_them():
    """Nearest-class-mean on contrast-normalised images separates the letters far above chance,
    and a mirrored letter is closer to its own mean *mirrored* than to its own mean: flips leak."""
    x, y, _ = generate_glyphs(size=24, per_class=30, seed=0)
    v = x[..., 0].reshape(len(x), -1).astype(np.float64)
    v = np.abs(v - np.median(v, axis=1, keepdims=True))  # ink = distance from the background level, dark or light ink alike
    v = (v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)
    train, test = np.arange(len(v)) % 3 != 0, np.arange(len(v)) % 3 == 0
    means = np.stack([v[train & (y == c)].mean(0) for c in range(10)])
    acc = ((v[test] @ means.T).argmax(1) == y[test]).mean()
    assert acc > 0.5  # chance is 0.1
    mirrored = v[test].reshape(-1, 24, 24)[:, :, ::-1].reshape(test.sum(), -1)
    assert ((mirrored @ means.T).argmax(1) == y[test]).mean() < acc - 0.2


def test_cli_writes_grey_class_folders(tmp_path, capsys):
    assert main(["data", "glyphs", str(tmp_path / "g"), "--size", "12", "--per-class", "2"]) == 0
    files = sorted((tmp_path / "g").rglob("*.png"))
    assert len(files) == 20 and {f.parent.name for f in files} == set(GLYPHS)
    img = Image.open(files[0])
    assert img.mode == "L" and img.size == (12, 12)
    assert np.array_equal(np.asarray(img), make_glyph(0, 12, np.random.default_rng([0, 0, 0])))
    assert main(["data", "glyphs", str(tmp_path / "h"), "--size", "4"]) == 2
