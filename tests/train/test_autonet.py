"""network auto: the widest UNet preset whose probed step time allows >= 30 epochs in the budget."""

import pytest

from difforge.config import Config
from difforge.data.source import load_training_images
from difforge.train import autonet
from difforge.train.trainer import Trainer

from ..conftest import TINY_NET, tiny_overrides


@pytest.fixture
def data():
    return load_training_images(Config().override(image_size=16, builtin_per_class=6).data, progress=False)


def test_widest_network_that_sees_the_data_often_enough(monkeypatch, data, caplog):
    times = {"unet-tiny": 0.01, "unet-small": 0.05, "unet": 1.0}
    probed = []
    monkeypatch.setattr(autonet, "probe_step_seconds", lambda name, *a, **k: probed.append(name) or times[name])
    # 24 images, batch 16, 1 min: tiny 96000 steps... unet 60 steps -> 40 epochs; small: 800 epochs
    cfg = Config().override(network="auto", max_minutes=1.0, batch_size=16, image_size=16)
    assert autonet.choose_network(cfg, data).model.network == "unet"
    cfg = cfg.override(max_minutes=0.5)  # unet: 20 epochs < 30
    assert autonet.choose_network(cfg, data).model.network == "unet-small"
    times["unet-tiny"] = 100.0  # nothing fits: the narrowest, and the wider ones are not probed
    probed.clear()
    assert autonet.choose_network(cfg, data).model.network == "unet-tiny" and probed == ["unet-tiny"]
    assert autonet.choose_network(cfg.override(max_minutes=None), data).model.network == "unet-tiny"


def test_probe_times_a_real_step(data):
    cfg = Config().override(image_size=16, batch_size=4, network_options=dict(TINY_NET))
    assert 0 < autonet.probe_step_seconds("unet-tiny", cfg, data, __import__("torch").device("cpu"), steps=1) < 60


def test_run_with_network_auto_records_the_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(autonet, "probe_step_seconds", lambda name, *a, **k: {"unet-tiny": 0.001}.get(name, 1e6))
    r = Trainer(progress=False, **tiny_overrides(tmp_path, network="auto", max_minutes=5.0, max_steps=2)).fit()
    assert "network: unet-tiny" in (r.run_dir / "config.yaml").read_text()
