"""Joint image+mask training: the loss falls, the model file records the mask channel, every
sample comes with a binary mask of its image's size (Pipeline and `difforge sample`), and flags a
model cannot serve are refused in one line."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_overrides
from tests.pipeline.clikit import cli, one_line_error
from difforge.data.builtin import write_dataset
from difforge.data.manifest import read_manifest
from difforge.modelfile import read_metadata
from difforge.pipeline import Pipeline
from difforge.train.trainer import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("joint_task")
    write_dataset(tmp / "d", size=16, per_class=4, progress=False, masks=True)
    # --masks MDIR beside a plain --data DIR (the pairs layout's two halves)
    result = Trainer(progress=False, **tiny_overrides(tmp, data=str(tmp / "d" / "images"), masks=str(tmp / "d" / "masks"),
                                                      task="joint", max_steps=40, lr=3e-3)).fit()
    return tmp, result


def test_loss_falls_and_the_file_records_the_mask_channel(trained):
    tmp, result = trained
    with open(result.run_dir / "metrics.csv") as f:
        loss = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")]
    assert len(loss) >= 35
    first, last = np.mean(loss[:8]), np.mean(loss[-8:])
    assert last < 0.7 * first, (first, last)
    meta = read_metadata(result.model_file)
    assert meta["data"]["joint_mask"] is True and meta["data"]["channels"] == 3
    assert meta["network"]["config"]["in_channels"] == 4


def test_generate_returns_binary_masks_of_the_image_size(trained):
    pipe = Pipeline.from_checkpoint(trained[1].model_file)
    out = pipe.generate(num=3, class_label="scratch", steps=4, seed=5)
    assert out.images.shape == (3, 16, 16, 3) and out.masks.shape == (3, 16, 16) and out.masks.dtype.is_floating_point is False
    again = pipe.generate(num=1, class_label="scratch", steps=4, seeds=[6])  # image i depends on its seed only
    assert np.array_equal(again.masks[0].numpy(), out.masks[1].numpy())
    with pytest.raises(Exception, match="joint mask"):
        pipe.interpolate(seeds=(0, 1), steps=2)


def test_sample_writes_masks_and_a_manifest(trained, tmp_path):
    tmp, result = trained
    res = cli("sample", result.model_file, "--num", "3", "--steps", "3", "--out", tmp_path / "s", "--masks", "--quiet", "--seed", "7")
    assert res.returncode == 0, res.stderr
    lines = read_manifest(tmp_path / "s")
    assert len(lines) == 3 and [ln["seed"] for ln in lines] == [7, 8, 9]
    for ln in lines:
        assert ln["method"] == "joint" and ln["mask"] == ln["image"][:-4] + "_mask.png" and ln["steps"] == 3
        img = np.asarray(Image.open(tmp_path / "s" / ln["image"]))
        mask = np.asarray(Image.open(tmp_path / "s" / ln["mask"]))
        assert mask.shape == img.shape[:2] == tuple(ln["size"]) and set(np.unique(mask)) <= {0, 255}


def test_flags_a_model_lacks_are_refused(tiny_model, tmp_path):
    from difforge.cli.main import main

    one_line_error(cli("sample", tiny_model, "--num", "1", "--steps", "2", "--masks", "--out", tmp_path / "o"), "--masks needs a joint-mask model")
    assert main(["sample", str(tiny_model), "--num", "2", "--steps", "2", "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert not list((tmp_path / "p").glob("*_mask.png"))
    assert [json.loads(l)["method"] for l in (tmp_path / "p" / "manifest.jsonl").read_text().splitlines()] == ["sample"] * 2
    one_line_error(cli("train", "--joint-mask", "--mask-conditioning", "--max-steps", "1"), "choose one")


def test_inpaint_with_a_joint_model_keeps_the_known_pixels(trained):
    tmp, result = trained
    pipe = Pipeline.from_checkpoint(result.model_file)
    src = np.asarray(Image.open(tmp / "d" / "images" / "good" / "good_00000.png"))
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:10, 5:12] = True
    out = pipe.inpaint(src, mask, num=2, class_label="scratch", steps=4, method="blend")
    assert out.images.shape == (2, 16, 16, 3) and (out.images.numpy()[:, ~mask] == src[~mask]).all()
