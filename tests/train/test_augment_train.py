"""Augmentation labels reach the network in training and are zero (absent) at sampling."""

import pytest
import torch

from difforge.errors import ConfigError
from difforge.models.unet import UNet
from difforge.pipeline import Pipeline
from difforge.train.trainer import Trainer

from ..conftest import tiny_overrides


def test_network_gets_labels_in_training_and_zeros_at_sampling(tmp_path, monkeypatch):
    seen = []
    forward = UNet.forward

    def spy(self, x, t, y=None, aug_labels=None):
        seen.append(None if aug_labels is None else aug_labels.detach().clone())
        return forward(self, x, t, y, aug_labels)

    monkeypatch.setattr(UNet, "forward", spy)
    r = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=3, augment="flips,rot90,translate", augment_p=1.0,
                                                 preview_num=2, preview_steps=2)).fit()
    assert r.steps == 3
    training = seen[:3]
    assert all(a is not None and a.shape == (8, 6) for a in training)
    assert torch.cat(training).abs().sum() > 0  # p = 1: the images were augmented and the network was told
    assert all(a is None for a in seen[3:]) and len(seen) > 3  # the preview sampled without labels (= zeros)
    pipe = Pipeline.from_checkpoint(r.model_file)
    net = pipe.net
    assert net.config["aug_dim"] == 6
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.equal(forward(net, x, t), forward(net, x, t, None, torch.zeros(2, 6)))


def test_augment_needs_a_conditioned_network(tmp_path):
    with pytest.raises(ConfigError, match="augmentation conditioning"):
        Trainer(progress=False, **tiny_overrides(tmp_path, network="dit-s/8", network_options={}, augment="flips",
                                                 augment_p=0.5)).fit()


def test_augmented_run_resumes_bit_exactly(tmp_path):
    from safetensors.torch import load_file

    over = dict(max_steps=6, augment="flips,rot90,translate", augment_p=0.5)
    full = Trainer(progress=False, **tiny_overrides(tmp_path, run="full", **over)).fit()
    stop = lambda tr, step, loss: tr.request_stop() if step == 3 else None  # noqa: E731
    part = Trainer(progress=False, callbacks=[stop], **tiny_overrides(tmp_path, run="part", **over)).fit()
    Trainer(resume=str(part.run_dir), progress=False).fit()
    a = load_file(str(full.run_dir / "checkpoints/state.safetensors"))
    b = load_file(str(part.run_dir / "checkpoints/state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
