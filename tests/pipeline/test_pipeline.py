import numpy as np
import pytest
import torch

from difforge.errors import UserError
from difforge.data.outputs import save_generated
from difforge.pipeline import Pipeline


def test_generate_shapes_classes_and_files(tiny_model, tmp_path):
    pipe = Pipeline.from_checkpoint(tiny_model)
    assert pipe.class_names == ["scratch", "inclusion", "crack", "patch"]
    out = pipe.generate(num=2, class_label="all", steps=3, seed=1)
    assert out.images.shape == (8, 16, 16, 3) and out.images.dtype == torch.uint8
    assert out.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    one = pipe.generate(num=3, class_label="crack", steps=3)
    assert one.labels.tolist() == [2, 2, 2]
    assert pipe.generate(num=1, class_label=1, steps=2).labels.tolist() == [1]
    written = save_generated(out, tmp_path / "o", grid=True, npz=True)
    assert len(written["images"]) == 8 and len(written["grids"]) == 4
    z = np.load(written["npz"], allow_pickle=False)
    assert z["arr_0"].shape == (8, 16, 16, 3) and z["arr_0"].dtype == np.uint8
    assert z["arr_1"].tolist() == out.labels.tolist()
    assert len(out.pil()) == 8


def test_same_seed_same_image_whatever_the_batch(tiny_model):
    pipe = Pipeline.from_checkpoint(tiny_model)
    a = pipe.generate(num=4, class_label="scratch", steps=4, seed=7, batch_size=4, sampler="ddim", eta=1.0)
    b = pipe.generate(num=4, class_label="scratch", steps=4, seed=7, batch_size=1, sampler="ddim", eta=1.0)
    assert (a.images.int() - b.images.int()).abs().max() <= 1
    c = pipe.generate(num=1, class_label="scratch", steps=4, seed=9, sampler="ddim", eta=1.0)
    assert (a.images[2].int() - c.images[0].int()).abs().max() <= 1  # image 2 of seed 7 is seed 9
    d = pipe.generate(num=1, class_label="scratch", steps=4, seed=10, sampler="ddim", eta=1.0)
    assert (c.images.int() - d.images.int()).abs().max() > 5


def test_bad_class_messages(tiny_model):
    pipe = Pipeline.from_checkpoint(tiny_model)
    with pytest.raises(UserError, match="scratch, inclusion"):
        pipe.generate(num=1, class_label="dent", steps=2)
    with pytest.raises(UserError, match="out of range"):
        pipe.generate(num=1, class_label=9, steps=2)


def test_ddpm_strided_runs(tiny_model):
    pipe = Pipeline.from_checkpoint(tiny_model)
    out = pipe.generate(num=1, class_label=0, sampler="ddpm", steps=100)
    assert out.images.shape == (1, 16, 16, 3)
