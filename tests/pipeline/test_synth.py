"""difforge synth: image+mask pairs on good images, resumable, each regenerated bit for bit from its manifest line."""

import io

import numpy as np
import pytest
from PIL import Image

from difforge.cli.main import main
from difforge.data.folder import load_image
from difforge.data.manifest import read_manifest
from difforge.pipeline.synth import MaskBank, draw_placement, place_mask, regenerate, shape_mask


@pytest.fixture()
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "good").mkdir()
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "good" / f"g{k}.png")
    (tmp_path / "masks" / "scratch").mkdir(parents=True)
    m = np.zeros((16, 16), np.uint8)
    m[2:4, 3:12] = 255
    Image.fromarray(m).save(tmp_path / "masks" / "scratch" / "a.png")
    m[:] = 0
    m[5:9, 5:8] = 255
    Image.fromarray(m).save(tmp_path / "masks" / "b.png")
    return tmp_path


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


def test_synth_writes_pairs_resumes_and_regenerates(tiny_model, inputs, capsys):
    out = inputs / "out"
    args = ["synth", "--model", str(tiny_model), "--good", str(inputs / "good"), "--out", str(out), "--masks", str(inputs / "masks"),
            "--method", "blend", "--steps", "3", "--seed", "11", "--quiet"]
    assert main([*args, "--num", "3"]) == 0
    lines = read_manifest(out)
    assert [ln["seed"] for ln in lines] == [11, 12, 13] and all(ln["method"] == "blend" and ln["source"] == "synthetic" for ln in lines)
    first = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    for ln in lines:
        img = np.asarray(Image.open(out / ln["image"]))
        mask = np.asarray(Image.open(out / ln["mask"])) > 127
        bg = load_image(ln["background"], 16, 3)
        assert mask.shape == img.shape[:2] == (16, 16) and mask.any()
        assert (img[~mask] == bg[~mask]).all()  # outside the mask: the good image, bit for bit
        assert ln["class"] in ("scratch", "inclusion", "crack", "patch") and ln["placement"]["kind"] == "mask"
        assert mask.sum() in (18, 12)  # flips / rotations / moves keep the area of a.png (2x9) or b.png (4x3)
    assert main([*args, "--num", "4"]) == 0
    assert "1 image+mask pairs made" in capsys.readouterr().out.splitlines()[-1]
    assert all((out / "images" / n).read_bytes() == b for n, b in first.items())
    lines = read_manifest(out)
    assert len(lines) == 4
    for ln in (lines[0], lines[3]):
        assert _png(regenerate(ln, out, model=tiny_model)) == (out / ln["image"]).read_bytes()


def test_shapes_and_repaint(tiny_model, inputs):
    out = inputs / "o2"
    assert main(["synth", "--model", str(tiny_model), "--good", str(inputs / "good"), "--out", str(out), "--mask-shapes", "auto",
                 "--num", "1", "--steps", "4", "--resample", "2", "--jump", "1", "--class", "crack", "--quiet"]) == 0
    (ln,) = read_manifest(out)
    assert ln["method"] == "repaint" and ln["sampler"] == "ddpm" and ln["class"] == "crack" and ln["placement"]["kind"] == "shape"
    assert _png(regenerate(ln, out, model=tiny_model)) == (out / ln["image"]).read_bytes()


def test_refusals(tiny_model, inputs, capsys):
    base = ["synth", "--model", str(tiny_model), "--good", str(inputs / "good"), "--out", str(inputs / "o3"), "--num", "1"]
    (inputs / "empty").mkdir()
    for extra, words in ((["--method", "mask-conditioned"], "needs a model trained with --mask-conditioning"),
                         (["--method", "joint"], "needs a model trained with --joint-mask"),
                         (["--masks", str(inputs / "empty")], "holds no images")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert not (inputs / "o3").exists()


def test_placement_is_a_function_of_the_seed(inputs):
    bank = MaskBank.from_folder(inputs / "masks")
    assert [p.name for p in bank.files_for("scratch")] == ["a.png"] and len(bank.files_for("crack")) == 2
    a = draw_placement(np.random.default_rng([5, 1]), 16, bank, "scratch")
    b = draw_placement(np.random.default_rng([5, 1]), 16, bank, "scratch")
    assert a == b and place_mask(a, 16).sum() == 18
    for shape in ("rect", "ellipse", "scratch"):
        m = shape_mask(shape, [0.5, 0.5, 0.5, 0.5, 0.5], 32)
        assert 0 < m.sum() < 32 * 32 / 4
