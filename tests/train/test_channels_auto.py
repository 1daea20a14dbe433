"""A grey folder trains a 1-channel model whose samples are 1-channel PNGs."""

import numpy as np
from PIL import Image

from difforge.pipeline import Pipeline
from difforge.train.trainer import Trainer

from ..conftest import tiny_overrides


def test_grey_data_trains_and_samples_one_channel(tmp_path):
    r = Trainer(progress=False, **tiny_overrides(tmp_path, builtin_per_class=4, max_steps=2, channels=1)).fit()
    assert "channels: 1" in (r.run_dir / "config.yaml").read_text()
    grey = tmp_path / "grey"
    for c in ("a", "b"):
        (grey / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(grey / c / f"{i}.png")
    r = Trainer(progress=False, **tiny_overrides(tmp_path, run="g", data=str(grey), max_steps=2)).fit()
    assert "channels: 1" in (r.run_dir / "config.yaml").read_text()
    assert "every image is grey" in (r.run_dir / "log.txt").read_text()
    pipe = Pipeline.from_checkpoint(r.model_file)
    assert pipe.channels == 1
    assert Image.open(next((r.run_dir / "samples").glob("*.png"))).mode == "L"
