"""difforge synth: image+mask pairs on good images, resumable, each regenerated bit for bit from its manifest line."""

import io

import numpy as np
import pytest
from PIL import Image

from difforge.cli.main import main
from difforge.data.folder import load_image
from difforge.data.manifest import read_manifest
from difforge.pipeline.synth import JITTER_SCALE, MaskBank, _jittered, draw_placement, place_mask, regenerate, shape_mask


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
    # pinned: the draws of a run without --mask-jitter stay those of runs made before the option existed
    assert {k: v for k, v in a.items() if k != "source"} == {"kind": "mask", "flip_h": False, "flip_v": True, "rot90": 3, "top": 3, "left": 13}
    for shape in ("rect", "ellipse", "scratch"):
        m = shape_mask(shape, [0.5, 0.5, 0.5, 0.5, 0.5], 32)
        assert 0 < m.sum() < 32 * 32 / 4


def test_manifest_records_the_guidance_interval_and_older_lines_guided_every_step(tiny_model, inputs):
    """Lines say which guidance interval made them; a line from before the interval existed (no key) was
    guided at every step, and regenerates that way: the image --cfg-interval all makes, not the default's."""
    base = ["synth", "--model", str(tiny_model), "--good", str(inputs / "good"), "--masks", str(inputs / "masks"),
            "--method", "blend", "--steps", "3", "--seed", "5", "--num", "1", "--cfg", "3", "--quiet"]
    assert main([*base, "--out", str(inputs / "every"), "--cfg-interval", "all"]) == 0
    assert main([*base, "--out", str(inputs / "dflt")]) == 0
    (every,), (dflt,) = read_manifest(inputs / "every"), read_manifest(inputs / "dflt")
    assert every["cfg_interval"] is None and dflt["cfg_interval"] == [0.1, 3.0]
    every_png, dflt_png = (inputs / "every" / every["image"]).read_bytes(), (inputs / "dflt" / dflt["image"]).read_bytes()
    assert every_png != dflt_png
    assert _png(regenerate(dflt, inputs / "dflt", model=tiny_model)) == dflt_png
    old = {k: v for k, v in dflt.items() if k != "cfg_interval"}
    assert _png(regenerate(old, inputs / "dflt", model=tiny_model)) == every_png


def test_mask_jitter_scales_and_turns_against_references(inputs):
    m = np.zeros((16, 16), bool)
    m[2:4, 3:12] = True  # a 2 x 9 bar
    assert np.array_equal(_jittered(m, 1.0, 0.0), np.ones((2, 9), bool))  # identity
    assert np.array_equal(_jittered(m, 1.0, 90.0), np.ones((9, 2), bool))  # a quarter turn = np.rot90's
    assert abs(int(_jittered(m, 2.0, 0.0).sum()) - 4 * 18) <= 8  # area x scale^2 (bilinear edges)
    diag = _jittered(m, 1.0, 45.0)
    assert diag.shape[0] > 5 and diag.shape[1] > 5 and diag.mean() < 0.6  # a diagonal bar, not a box
    bank = MaskBank.from_folder(inputs / "masks")
    seen = set()
    for s in range(30):
        p = draw_placement(np.random.default_rng([s, 1]), 16, bank, "scratch", jitter=True)
        assert JITTER_SCALE[0] <= p["scale"] <= JITTER_SCALE[1] and -45.0 <= p["angle"] < 45.0
        assert p == draw_placement(np.random.default_rng([s, 1]), 16, bank, "scratch", jitter=True)
        placed = place_mask(p, 16)
        assert placed.any() and placed.shape == (16, 16)
        ys, xs = np.nonzero(placed)
        assert ys.min() == p["top"] and xs.min() == p["left"]  # the box starts where drawn, inside the image
        seen.add(int(placed.sum()))
    assert len(seen) >= 8  # many sizes and shapes from one 2 x 9 mask (flips and quarter turns alone: one area, 18)


def test_jittered_synth_regenerates_bit_for_bit(tiny_model, inputs):
    out = inputs / "jit"
    assert main(["synth", "--model", str(tiny_model), "--good", str(inputs / "good"), "--masks", str(inputs / "masks"), "--out", str(out),
                 "--method", "blend", "--steps", "3", "--num", "2", "--mask-jitter", "--quiet"]) == 0
    for ln in read_manifest(out):
        assert "scale" in ln["placement"] and "angle" in ln["placement"]
        assert (np.asarray(Image.open(out / ln["mask"])) > 127).sum() == place_mask(ln["placement"], 16).sum()
        assert _png(regenerate(ln, out, model=tiny_model)) == (out / ln["image"]).read_bytes()
