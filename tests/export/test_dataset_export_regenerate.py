"""A line of an *exported* manifest still regenerates its synthetic image bit for bit."""

import io

import numpy as np
from PIL import Image

from difforge.cli.main import main
from difforge.data.manifest import read_manifest
from difforge.pipeline.synth import regenerate


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


def test_exported_line_regenerates_the_exported_image(tiny_model, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "good").mkdir()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "good" / "g.png")
    (tmp_path / "masks").mkdir()
    m = np.zeros((16, 16), np.uint8)
    m[4:9, 3:12] = 255
    Image.fromarray(m).save(tmp_path / "masks" / "a.png")
    synth = tmp_path / "synth"
    assert main(["synth", "--model", str(tiny_model), "--good", str(tmp_path / "good"), "--out", str(synth), "--masks",
                 str(tmp_path / "masks"), "--method", "blend", "--steps", "3", "--num", "2", "--quiet"]) == 0
    out = tmp_path / "yolo"
    assert main(["export", str(synth), "--format", "yolo", "--out", str(out), "--split", "train=1", "--quiet"]) == 0
    lines = read_manifest(out)
    assert len(lines) == 2 and all(ln["source"] == "synthetic" and ln["image"].startswith("images/train/") for ln in lines)
    for ln in lines:
        assert _png(regenerate(ln, out, model=tiny_model)) == (out / ln["image"]).read_bytes()
