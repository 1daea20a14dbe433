"""A joint-mask sample folder: the masks its manifest lists are not evaluated as samples."""

import numpy as np
from PIL import Image

from difforge.data.manifest import ManifestWriter, make_line
from difforge.metrics.sources import folder_source


def test_listed_masks_are_skipped(tmp_path):
    w = ManifestWriter(tmp_path)
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"s_{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"s_{i}_mask.png")
        w.add(make_line(f"s_{i}.png", mask=f"s_{i}_mask.png", size=(8, 8), seed=i, method="joint"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "other_mask.png")  # not listed: a sample
    src = folder_source(tmp_path)
    assert src.count == 3 and "2 masks listed in manifest.jsonl skipped" in src.name
