"""Tiny super-resolution model files shared by the upscale tests (library and CLI)."""

import pytest

from difforge.train.trainer import Trainer
from tests.conftest import TINY_NET, tiny_overrides


@pytest.fixture(scope="session")
def sr_models(tmp_path_factory):
    """A conditional x2 diffusion upsampler with noise augmentation (16 px), a regression upscaler and an 8 px base model."""
    tmp = tmp_path_factory.mktemp("sr")
    diff = Trainer(progress=False, **tiny_overrides(tmp, run="sr", task="sr", scale=2, noise_aug=0.5, max_steps=4)).fit()
    reg = Trainer(progress=False, **tiny_overrides(tmp, run="reg", task="sr-regression", sr_objective="regression", loss="l1", max_steps=4,
                                                   network_options=dict(channels=8, blocks=1, layers=2, growth=4))).fit()
    base = Trainer(progress=False, **tiny_overrides(tmp, run="base", image_size=8, max_steps=2,
                                                    network_options=dict(TINY_NET, attention_resolutions=[]))).fit()
    return {"diffusion": diff.model_file, "regression": reg.model_file, "base": base.model_file}
