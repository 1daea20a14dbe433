"""Fine-tuning across --augment / --crop-p: the file's weights fit, and the fine-tune starts at the file's network."""

import pytest
import torch

from difforge.pipeline import Pipeline
from difforge.train.finetune import fit_label_embedding
from difforge.train.trainer import Trainer

from ..conftest import tiny_overrides

KEY = "aug_embed.weight"


def test_label_columns_move_to_their_part_and_the_rest_is_zero():
    aug = torch.arange(6.0).repeat(4, 1)  # a file with augment labels only: columns 0..5
    own = {KEY: torch.full((4, 9), 7.0)}  # this run: augment and crops
    tensors = {KEY: aug.clone()}
    assert "augment kept" in fit_label_embedding(own, tensors)
    assert torch.equal(tensors[KEY][:, :6], aug) and not tensors[KEY][:, 6:].any()
    crop = torch.tensor([[1.0, 2.0, 3.0]]).repeat(4, 1)  # a file with crops only -> columns 6..8 of the nine
    tensors = {KEY: crop.clone()}
    fit_label_embedding(own, tensors)
    assert torch.equal(tensors[KEY][:, 6:], crop) and not tensors[KEY][:, :6].any()
    tensors = {KEY: torch.ones(4, 9)}  # both -> crops only: the crop part stays
    fit_label_embedding({KEY: torch.zeros(4, 3)}, tensors)
    assert torch.equal(tensors[KEY], torch.ones(4, 3))
    tensors = {KEY: torch.ones(4, 5)}  # a width this does not know: left for check_fit to name
    assert fit_label_embedding({KEY: torch.zeros(4, 3)}, tensors) is None and tensors[KEY].shape == (4, 5)
    tensors = {"w": torch.ones(1)}
    assert fit_label_embedding({"w": torch.zeros(1)}, tensors) is None  # nothing to do


@pytest.mark.parametrize("first, then", [({}, dict(crop_p=0.5)), (dict(crop_p=0.5), {}),
                                         (dict(augment="flips", augment_p=0.5), dict(augment="flips", augment_p=0.5, crop_p=0.5))],
                         ids=["add-crops", "drop-crops", "augment-then-both"])
def test_fine_tune_across_label_settings_starts_at_the_files_network(tmp_path, first, then):
    base = Trainer(progress=False, **tiny_overrides(tmp_path, run="base", max_steps=3, ema_select=False, **first)).fit()
    stop = lambda tr, step, loss: tr.request_stop()  # noqa: E731  -- stop at once: the weights as loaded
    tuned = Trainer(progress=False, pretrain=str(base.model_file), callbacks=[stop],
                    **tiny_overrides(tmp_path, run="tuned", max_steps=3, lr=1e-12, ema_select=False, **then)).fit()
    a, b = Pipeline.from_checkpoint(base.model_file).net, Pipeline.from_checkpoint(tuned.model_file).net
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 700])
    with torch.no_grad():
        assert torch.allclose(a(x, t, torch.tensor([0, 1])), b(x, t, torch.tensor([0, 1])), atol=1e-5)
