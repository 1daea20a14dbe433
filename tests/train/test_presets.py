"""Named recipes: fast is the default, iddm and classic restore older defaults."""

import pytest

from difforge.config import Config
from difforge.errors import ConfigError
from difforge.train.presets import DEFAULT_PRESET, PRESETS, preset_values


def test_the_default_config_is_the_fast_preset():
    assert DEFAULT_PRESET == "fast"
    assert Config().override(**preset_values("fast")).to_dict() == Config().to_dict()


def test_iddm_and_classic_presets():
    iddm = Config().override(**preset_values("iddm"))
    assert (iddm.diffusion.noise_schedule, iddm.diffusion.target, iddm.train.lr, iddm.train.lr_schedule) == ("linear", "eps", 3e-4, "linear")
    assert iddm.train.ema_decay == 0.995 and iddm.model.network == "unet" and iddm.model.network_options == {"act": "gelu", "patch_size": 1}
    classic = Config().override(**preset_values("classic"))
    assert (classic.train.lr, classic.train.lr_schedule, classic.train.ema_decay, classic.data.hflip) == (2e-4, "constant", 0.999, True)
    with pytest.raises(ConfigError, match="fast, iddm, classic"):
        preset_values("best")
    assert set(PRESETS) == {"fast", "iddm", "classic"}


def test_cli_preset_applies_under_flags(monkeypatch):
    from difforge.cli import train as cli_train
    from difforge.cli.main import build_parser

    args = build_parser().parse_args(["train", "--preset", "iddm", "--lr", "5e-4"])
    seen = {}

    def fake_fit(args, overrides, defaults=None):
        seen.update(overrides=overrides, defaults=defaults)
        raise SystemExit(0)

    monkeypatch.setattr(cli_train, "fit_from_args", fake_fit)
    with pytest.raises(SystemExit):
        cli_train.run(args)
    assert seen["overrides"]["lr"] == 5e-4 and seen["defaults"]["lr"] == 3e-4  # start_run: overrides win over defaults
    assert seen["defaults"]["noise_schedule"] == "linear"


def test_a_presets_network_options_stay_under_the_flags_ones(monkeypatch):
    """``--preset iddm --dropout 0.1``: IDDM's GELU and full-resolution UNet stay, the flag adds dropout."""
    import difforge.train.trainer as trainer_module
    from difforge.train.start import start_run

    seen = {}

    class FakeTrainer:
        def __init__(self, base, **kw):
            seen.update(kw)

        def fit(self):
            return None

    monkeypatch.setattr(trainer_module, "Trainer", FakeTrainer)
    start_run(None, {"network_options": {"dropout": 0.1, "act": "silu"}}, defaults=preset_values("iddm"))
    assert seen["network_options"] == {"act": "silu", "patch_size": 1, "dropout": 0.1}
    assert seen["noise_schedule"] == "linear"
