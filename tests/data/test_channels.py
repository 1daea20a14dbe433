"""channels: auto trains one channel when every image is grey, three otherwise."""

import numpy as np
import torch
from PIL import Image

from difforge.config import DataConfig
from difforge.data.source import is_grayscale, load_training_images


def _folder(root, grey: bool, one_channel_files: bool = False):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            v = rng.integers(0, 256, (16, 16), dtype=np.uint8)
            if one_channel_files and i == 0:
                Image.fromarray(v, "L").save(root / c / f"{i}.png")
                continue
            rgb = np.stack([v, v, v], -1) if grey else rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(rgb, "RGB").save(root / c / f"{i}.png")
    return root


def test_grey_folder_trains_one_channel(tmp_path):
    root = _folder(tmp_path / "grey", grey=True, one_channel_files=True)
    data = load_training_images(DataConfig(data=str(root), image_size=16), progress=False)
    assert data.channels == 1 and data.images.shape == (6, 1, 16, 16)
    assert "every image is grey" in data.source
    same = load_training_images(DataConfig(data=str(root), image_size=16, channels=1), progress=False)
    assert torch.equal(data.images, same.images)  # exactly what channels=1 decodes


def test_colour_folder_keeps_three_channels(tmp_path):
    root = _folder(tmp_path / "colour", grey=False)
    data = load_training_images(DataConfig(data=str(root), image_size=16), progress=False)
    assert data.channels == 3 and "colour images" in data.source
    forced = load_training_images(DataConfig(data=str(root), image_size=16, channels=1), progress=False)
    assert forced.channels == 1  # an explicit setting is kept


def test_is_grayscale():
    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert is_grayscale(x) and is_grayscale(x.expand(2, 3, 4, 4))
    y = x.expand(2, 3, 4, 4).clone()
    y[1, 2, 0, 0] ^= 1
    assert not is_grayscale(y)
