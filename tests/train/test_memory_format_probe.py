"""channels_last: auto — probed per network with a time budget, off without one, recorded in the config."""

import pytest

from difforge.config import Config
from difforge.errors import ConfigError
from difforge.train import autonet
from difforge.train.autonet import CHANNELS_LAST_GAIN, choose_memory_format


class _Data:
    def __init__(self):
        import torch

        self.images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
        self.labels = None
        self.num_classes = 0


@pytest.mark.parametrize("nchw,cl,expected", [(1.0, 1.0 / (CHANNELS_LAST_GAIN + 0.01), True),
                                              (1.0, 1.0 / (CHANNELS_LAST_GAIN - 0.02), False), (1.0, 2.0, False)])
def test_probe_picks_the_faster_layout_with_a_margin(monkeypatch, nchw, cl, expected):
    calls = []

    def fake_probe(name, config, data, device, steps=2, channels_last=False):
        calls.append(channels_last)
        return cl if channels_last else nchw

    monkeypatch.setattr(autonet, "probe_step_seconds", fake_probe)
    cfg = Config().override(max_minutes=1.0, network="unet-tiny", image_size=16)
    assert choose_memory_format(cfg, _Data()).train.channels_last is expected
    assert calls == [False, True]


def test_no_budget_or_fixed_choice_does_not_probe(monkeypatch):
    monkeypatch.setattr(autonet, "probe_step_seconds", lambda *a, **k: pytest.fail("probed"))
    assert choose_memory_format(Config(), _Data()).train.channels_last is False
    fixed = Config().override(max_minutes=1.0, channels_last=True)
    assert choose_memory_format(fixed, _Data()).train.channels_last is True
    assert choose_memory_format(Config().override(max_minutes=1.0, task="vae"), _Data()).train.channels_last is False


def test_real_probe_times_both_layouts():
    cfg = Config().override(max_minutes=1.0, network="unet-tiny", image_size=16, batch_size=2)
    out = choose_memory_format(cfg, _Data())
    assert out.train.channels_last in (True, False)


def test_config_values():
    Config().override(channels_last="auto").validate()
    with pytest.raises(ConfigError, match="channels_last"):
        Config().override(channels_last="sometimes").validate()
