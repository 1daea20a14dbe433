"""Mask-conditioned training: the loss falls, the model file records its extra inputs, inpaint uses
them and sample refuses the model."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_overrides
from difforge.data.builtin import write_dataset
from difforge.errors import ConfigError, UserError
from difforge.modelfile import read_metadata
from difforge.pipeline import Pipeline
from difforge.train.tasks.base import register_task
from difforge.train.tasks.inpaint import random_masks
from difforge.train.trainer import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    register_task("inpaint", "difforge.train.tasks.inpaint:InpaintTask")  # already listed; kept harmless
    tmp = tmp_path_factory.mktemp("inpaint_task")
    write_dataset(tmp / "d", size=16, per_class=4, progress=False, masks=True)
    result = Trainer(progress=False, **tiny_overrides(tmp, data=str(tmp / "d" / "images"), task="inpaint", max_steps=40,
                                                      lr=3e-3, checkpoint_every=1000)).fit()
    return tmp, result


def test_loss_falls_and_the_file_records_its_inputs(trained):
    tmp, result = trained
    with open(result.run_dir / "metrics.csv") as f:
        loss = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")]
    assert len(loss) >= 35
    first, last = np.mean(loss[:8]), np.mean(loss[-8:])
    assert last < 0.7 * first, (first, last)
    meta = read_metadata(result.model_file)
    assert meta["inputs"]["mask_conditioning"] and meta["data"]["channels"] == 3
    assert meta["network"]["config"]["in_channels"] == 7
    assert (result.run_dir / "samples").is_dir()


def _pipeline(model_file):
    """The trained model as a Pipeline, built from the file without modelfile's input-channel check."""
    from safetensors.torch import load_file

    from difforge.models import registry

    meta = read_metadata(model_file)
    net = registry.build(meta["network"]["name"], **meta["network"]["config"])
    net.load_state_dict(load_file(str(model_file)))
    return Pipeline(net, meta, torch.device("cpu"), source=str(model_file))


def test_inpaint_uses_the_mask_and_sample_refuses(trained):
    tmp, result = trained
    pipe = _pipeline(result.model_file)
    with pytest.raises(UserError, match="mask-conditioned.*difforge inpaint"):
        pipe.generate(num=2, steps=2)
    src = np.asarray(Image.open(tmp / "d" / "images" / "good" / "good_00000.png"))
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:10, 5:12] = True
    out = pipe.inpaint(src, mask, num=2, class_label="scratch", steps=4, cfg=2.0)
    assert out.method == "blend" and (out.images.numpy()[:, ~mask] == src[~mask]).all()
    assert (out.images.numpy()[:, mask] != src[mask]).any()


def test_from_checkpoint_loads_a_mask_conditioned_file(trained):
    Pipeline.from_checkpoint(trained[1].model_file)


def test_random_masks_are_rectangles_or_ellipses_inside_the_image():
    u = torch.tensor([[0.5, 0.5, 1.0, 0.0, 0.9], [0.0, 1.0, 0.0, 0.0, 0.1]])
    m = random_masks(u, 20)
    assert m.shape == (2, 1, 20, 20)
    rows, cols = torch.nonzero(m[0, 0], as_tuple=True)
    assert rows.min() == 9 and rows.max() == 10 and cols.min() == 5 and cols.max() == 14  # rect 0.5 +- (0.25, 0.06)
    assert 0 < m[1].sum() < 20 * 20 * 0.05


def test_plain_folder_is_refused(tmp_path):
    register_task("inpaint", "difforge.train.tasks.inpaint:InpaintTask")
    write_dataset(tmp_path / "flat", size=16, per_class=2, progress=False)
    with pytest.raises(ConfigError, match="image\\+mask pairs"):
        Trainer(progress=False, **tiny_overrides(tmp_path, data=str(tmp_path / "flat"), task="inpaint", max_steps=1)).fit()


def test_train_mask_conditioning_through_the_cli(tmp_path, capsys):
    """`difforge data defects ROOT --masks` then `difforge train --data ROOT/images --mask-conditioning`."""
    from difforge.cli.main import main
    from difforge.modelfile import read_metadata

    root = tmp_path / "d"
    assert main(["data", "defects", str(root), "--size", "16", "--per-class", "3", "--masks"]) == 0
    rc = main(["train", "--data", str(root / "images"), "--mask-conditioning", "--runs-dir", str(tmp_path / "runs"), "--run", "m",
               "--image-size", "16", "--max-steps", "2", "--batch-size", "4", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    meta = read_metadata(tmp_path / "runs" / "m" / "checkpoints" / "ema.safetensors")
    assert meta["inputs"]["mask_conditioning"] and meta["kind"] == "diffusion"
