"""Memorisation fraction: 1.0 for samples that are training images, about 0 for fresh noise and novel images."""

import numpy as np
import pytest
from PIL import Image

from difforge.metrics.memorisation import memorisation, memorisation_of_folders, nearest_distances


def _train(n=60, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_copies_of_training_images_are_all_memorised():
    train = _train()
    copies = train[np.random.default_rng(1).permutation(len(train))[:20]]
    assert memorisation(copies, train)["fraction"] == 1.0


def test_fresh_noise_and_novel_images_are_not():
    train = _train()
    noise = np.random.default_rng(2).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)  # same distribution, new draws
    assert memorisation(noise, train)["fraction"] == 0.0
    near = train[:10].astype(np.int16) + np.random.default_rng(3).integers(-3, 4, train[:10].shape)  # copies with faint noise
    assert memorisation(np.clip(near, 0, 255).astype(np.uint8), train)["fraction"] == 1.0


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(4)
    q, r = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    brute = np.sqrt(((q[:, None] - r[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(nearest_distances(q, r, block=3), brute)
    self_brute = np.sort(np.sqrt(((r[:, None] - r[None]) ** 2).sum(-1)), axis=1)[:, 1]
    assert np.allclose(nearest_distances(r, r, exclude_self=True, block=4), self_brute)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="quantile"):
        memorisation(_train(4), _train(4), quantile=1.5)
    with pytest.raises(ValueError, match="same size"):
        memorisation(_train(4, size=4), _train(4, size=8))


def test_folders(tmp_path):
    train = _train(30)
    for d, imgs in (("train", train), ("fake", train[:5])):
        (tmp_path / d).mkdir()
        for i, im in enumerate(imgs):
            Image.fromarray(im).save(tmp_path / d / f"{i}.png")
    m = memorisation_of_folders(tmp_path / "fake", tmp_path / "train")
    assert m["fraction"] == 1.0 and m["num_samples"] == 5 and m["num_train"] == 30
