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


@pytest.mark.parametrize("over", [dict(augment="flips,rot90,translate", augment_p=0.5), dict(crop_p=0.5),
                                  dict(mask_weight=3.0, crop_p=0.5)], ids=["augment", "crops", "mask-weight"])
def test_augmented_run_resumes_bit_exactly(tmp_path, over):
    from safetensors.torch import load_file

    over = dict(max_steps=6, **over)
    full = Trainer(progress=False, **tiny_overrides(tmp_path, run="full", **over)).fit()
    stop = lambda tr, step, loss: tr.request_stop() if step == 3 else None  # noqa: E731
    part = Trainer(progress=False, callbacks=[stop], **tiny_overrides(tmp_path, run="part", **over)).fit()
    Trainer(resume=str(part.run_dir), progress=False).fit()
    a = load_file(str(full.run_dir / "checkpoints/state.safetensors"))
    b = load_file(str(part.run_dir / "checkpoints/state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_crop_batches_reach_the_network_told_where_and_sampling_is_whole(tmp_path, monkeypatch):
    seen = []
    forward = UNet.forward

    def spy(self, x, t, y=None, aug_labels=None):
        seen.append((x.shape[-1], None if aug_labels is None else aug_labels.detach().clone()))
        return forward(self, x, t, y, aug_labels)

    monkeypatch.setattr(UNet, "forward", spy)
    r = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=8, crop_p=0.5, preview_num=2, preview_steps=2,
                                                 ema_select=False)).fit()
    training, sampling = seen[:8], seen[8:]
    sizes = [size for size, _ in training]
    assert set(sizes) == {8, 16}  # p = 0.5 over 8 steps: crops (half the side) and whole images both trained
    for size, labels in training:
        assert labels.shape == (8, 3)
        if size == 16:
            assert not labels.any()  # a whole image is "no crop"
        else:
            assert (labels[:, 0] == 1).all() and ((labels[:, 1:] >= 0) & (labels[:, 1:] <= 0.5)).all()
    assert sampling and all(size == 16 and labels is None for size, labels in sampling)
    assert Pipeline.from_checkpoint(r.model_file).net.config["aug_dim"] == 3


def test_crops_and_augmentations_share_the_label_vector(tmp_path, monkeypatch):
    seen = []
    forward = UNet.forward

    def spy(self, x, t, y=None, aug_labels=None):
        seen.append(None if aug_labels is None else aug_labels.shape)
        return forward(self, x, t, y, aug_labels)

    monkeypatch.setattr(UNet, "forward", spy)
    r = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=2, crop_p=0.5, augment="flips", augment_p=0.5,
                                                 ema_select=False)).fit()
    assert seen[:2] == [(8, 9), (8, 9)]
    assert Pipeline.from_checkpoint(r.model_file).net.config["aug_dim"] == 9


@pytest.mark.parametrize("over, match", [
    (dict(crop_size=9), "does not fit the network"),  # 9 is not divisible by the 2-level UNet's 2
    (dict(crop_size=16), "below the image size"),
    (dict(text_encoder="builtin"), "text run"),
    (dict(network="dit-s/8", network_options={}), "augmentation conditioning"),
])
def test_bad_crop_settings_are_refused(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        Trainer(progress=False, **tiny_overrides(tmp_path, crop_p=0.5, **over)).fit()

