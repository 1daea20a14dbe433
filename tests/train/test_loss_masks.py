"""--mask-weight: a defect pixel's loss weighs 1 + W, and each mask stays on its own image's pixels."""

import numpy as np
import pytest
import torch
from PIL import Image

from difforge.config import Config, DataConfig
from difforge.diffusion.objective import Objective
from difforge.diffusion.schedule import Schedule
from difforge.errors import ConfigError
from difforge.train.loss_masks import TEXT_MASK_WEIGHT, builtin_masks
from difforge.train.trainer import Trainer

from ..conftest import tiny_overrides


def test_objective_weight_is_the_per_pixel_weighted_mean():
    obj = Objective(Schedule.from_settings(Config().override(noise_shift=1.0).diffusion), target="eps")
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([1, 400, 900])
    zero = lambda x, t, y: torch.zeros_like(x)  # noqa: E731 -- the eps target's error is then the noise itself
    weight = 1 + 5 * (torch.rand(3, 1, 4, 4) < 0.3).float()
    plain = obj(zero, x0, t, noise)
    weighted = obj(zero, x0, t, noise, weight=weight)
    assert torch.allclose(plain["loss"], (noise**2).mean((1, 2, 3)))
    assert torch.allclose(weighted["loss"], (noise**2 * weight).mean((1, 2, 3)))
    assert torch.equal(weighted["mse"], plain["mse"])  # the logged term stays the unweighted mean
    assert not torch.allclose(weighted["loss"], plain["loss"])


def _pairs(root, n_per_class=40, size=16):
    """ROOT/images/<c>/*.png with ROOT/masks/<c>/*.png where every image is white exactly on its mask."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "images" / c).mkdir(parents=True)
        (root / "masks" / c).mkdir(parents=True)
        for i in range(n_per_class):
            m = np.zeros((size, size), dtype=np.uint8)
            top, left = rng.integers(0, size - 4, 2)
            m[top:top + rng.integers(2, 5), left:left + rng.integers(1, 8)] = 255  # asymmetric: flips and turns move it
            Image.fromarray(m).save(root / "images" / c / f"{i:03d}.png")
            Image.fromarray(m).save(root / "masks" / c / f"{i:03d}.png")
    return root / "images"


def test_masks_ride_with_their_images_through_hold_out_flips_crops_and_augmentations(tmp_path, monkeypatch):
    seen = []
    call = Objective.__call__

    def spy(self, net, x0, t, noise, y=None, weight=None):
        seen.append((x0.detach().clone(), None if weight is None else weight.detach().clone()))
        return call(self, net, x0, t, noise, y, weight=weight)

    monkeypatch.setattr(Objective, "__call__", spy)
    data = _pairs(tmp_path / "set")
    r = Trainer(progress=False, **tiny_overrides(tmp_path, data=str(data), max_steps=8, mask_weight=3.0, hflip=True,
                                                 augment="flips,rot90,translate", augment_p=0.7, crop_p=0.5,
                                                 ema_select=True, preview_num=2, preview_steps=2)).fit()
    assert r.steps == 8
    training = [(x, w) for x, w in seen if w is not None]
    assert len(training) == 8
    assert {x.shape[-1] for x, _ in training} == {8, 16}  # crops and whole images both checked
    for x, w in training:
        assert x.shape[1] == 1 and w.shape == (x.shape[0], 1, *x.shape[-2:])  # grey images; the mask is not an image channel
        assert torch.equal(w, 1 + 3.0 * (x > 0).float())  # white pixels are exactly the weighted ones
    assert any((w > 1).any() for _, w in training) and any((w == 1).any() for _, w in training)


def test_builtin_masks_line_up_with_the_written_pairs(tmp_path):
    from difforge.data.builtin import CLASSES, write_dataset
    from difforge.data.masks import load_pairs

    write_dataset(tmp_path / "d", size=16, per_class=3, progress=False, masks=True)
    pairs = load_pairs(tmp_path / "d", 16, 3)  # its classes sorted by name; the built-in order is CLASSES'
    masks = builtin_masks(DataConfig(image_size=16, builtin_per_class=3), 3 * len(CLASSES))
    assert masks.shape == (3 * len(CLASSES), 1, 16, 16) and masks.any()
    for k, name in enumerate(CLASSES):
        assert torch.equal(masks[3 * k:3 * k + 3], pairs.masks[pairs.labels == pairs.class_names.index(name)])


def test_builtin_run_weighs_its_own_masks(tmp_path, monkeypatch):
    seen = []
    call = Objective.__call__

    def spy(self, net, x0, t, noise, y=None, weight=None):
        seen.append(weight)
        return call(self, net, x0, t, noise, y, weight=weight)

    monkeypatch.setattr(Objective, "__call__", spy)
    Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=2, mask_weight=2.0, ema_select=False)).fit()
    w = [x for x in seen if x is not None]
    assert len(w) == 2 and all(set(x.unique().tolist()) == {1.0, 3.0} for x in w)


@pytest.mark.parametrize("over, words", [
    (dict(mask_weight=2.0, task="joint"), "pixel-space diffusion"),
    (dict(mask_weight=2.0, use_kl=True), "use_kl"),
    (dict(mask_weight=-1.0), "mask_weight"),
])
def test_bad_settings_are_refused(over, words):
    with pytest.raises(ConfigError, match=words):
        Config().override(**over).validate()


def test_a_folder_without_masks_is_refused(tmp_path):
    import shutil

    data = _pairs(tmp_path / "set").parent
    shutil.rmtree(data / "masks")
    with pytest.raises(ConfigError, match="mask"):
        Trainer(progress=False, **tiny_overrides(tmp_path, data=str(data / "images"), mask_weight=2.0, max_steps=1)).fit()


@pytest.mark.parametrize("over, new, want", [
    (dict(text_encoder="builtin"), True, TEXT_MASK_WEIGHT),  # the built-in set has masks
    (dict(text_encoder="builtin"), False, 0.0),  # a resumed run whose config.yaml predates the setting
    (dict(), True, 0.0),  # class-conditional: unmeasured, the plain mean
    (dict(text_encoder="builtin", data="NOMASKS"), True, 0.0),  # a folder without masks
    (dict(text_encoder="builtin", data="PAIRS"), True, TEXT_MASK_WEIGHT),  # ROOT/images beside ROOT/masks
    (dict(text_encoder="builtin", mask_weight=0.0), True, 0.0),  # what the user says is kept
    (dict(mask_weight=2.5), True, 2.5),
])
def test_auto_weighs_masks_of_new_text_runs(tmp_path, over, new, want):
    from difforge.train.loss_masks import choose_mask_weight

    if over.get("data") == "NOMASKS":
        (tmp_path / "flat").mkdir()
        over = dict(over, data=str(tmp_path / "flat"))
    elif over.get("data") == "PAIRS":
        over = dict(over, data=str(_pairs(tmp_path / "set", n_per_class=1)))
    config = Config().override(**over)
    assert config.data.mask_weight == over.get("mask_weight", "auto")
    assert choose_mask_weight(config, new).data.mask_weight == want
