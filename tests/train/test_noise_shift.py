"""``noise_shift: auto``: the shift a new run trains with, by image size, where it was measured (train/noise_shift.py)."""

import argparse

import pytest
import torch

from difforge.config import Config
from difforge.errors import ConfigError
from difforge.train.noise_shift import LEGACY_SHIFT, SHIFT_BY_SIZE, choose_noise_shift, shift_for_size
from difforge.train.presets import preset_values


def _shift(new=True, pretrain=None, **kw):
    return choose_noise_shift(Config().override(**kw), new, pretrain)[0].diffusion.noise_shift


def test_the_table_shifts_small_images_only():
    small = SHIFT_BY_SIZE[-1][1]
    assert 0 < small < 1
    assert [shift_for_size(s) for s in (8, 16, 24, 31, 32, 64, 256)] == [small] * 4 + [1.0] * 3


def test_a_new_small_cosine_model_is_shifted_and_says_why():
    config, note = choose_noise_shift(Config().override(image_size=16), True)
    assert config.diffusion.noise_shift == shift_for_size(16) < 1
    assert note.startswith("noise shift auto: 0.35 (a 16 px cosine-schedule model") and "--noise-shift 1" in note
    assert choose_noise_shift(Config().override(image_size=32), True) == (Config().override(image_size=32, noise_shift=1.0), None)


@pytest.mark.parametrize("kw", [dict(noise_schedule="linear"), dict(task="sr"), dict(text_encoder="builtin"),
                                dict(latent=True, vae="vae.safetensors"), dict(task="vae")])
def test_runs_not_measured_stay_unshifted(kw):
    assert _shift(image_size=16, **kw) == 1.0


def test_a_noisy_classifier_gets_the_shift_of_the_model_it_will_guide():
    assert _shift(image_size=16, task="classifier", noise_schedule="cosine") == _shift(image_size=16)
    assert _shift(image_size=16, task="classifier", noise_schedule="linear") == 1.0


def test_a_number_is_kept_and_a_resumed_config_from_before_the_setting_is_unshifted():
    assert _shift(image_size=16, noise_shift=2.0) == 2.0
    assert _shift(new=False, image_size=16) == LEGACY_SHIFT == 1.0


def test_a_fine_tune_keeps_its_model_file_s_shift(monkeypatch, tmp_path):
    import difforge.modelfile as modelfile

    monkeypatch.setattr(modelfile, "read_metadata", lambda path: {"diffusion": {"noise_shift": 0.5}})
    assert _shift(image_size=64, pretrain="m.safetensors") == 0.5
    monkeypatch.setattr(modelfile, "read_metadata", lambda path: {"diffusion": {}})  # a file from before shifts
    assert _shift(image_size=16, pretrain="m.safetensors") == 1.0


def test_presets_of_other_tools_are_unshifted_and_fast_decides():
    assert preset_values("iddm")["noise_shift"] == preset_values("classic")["noise_shift"] == 1.0
    assert preset_values("fast")["noise_shift"] == "auto" == Config().diffusion.noise_shift


def test_the_cli_takes_auto_or_a_number_and_the_config_checks_the_number():
    from difforge.cli.train import number_or_auto

    assert number_or_auto("auto") == "auto" and number_or_auto("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match="neither a number nor auto"):
        number_or_auto("half")
    Config().override(noise_shift="auto").validate()
    with pytest.raises(ConfigError, match="noise_shift"):
        Config().override(noise_shift=0).validate()


def test_a_schedule_is_not_built_from_an_unsettled_auto():
    from difforge.diffusion.schedule import Schedule

    with pytest.raises(ValueError, match="still 'auto'"):
        Schedule.from_settings(Config().diffusion)
    settled = choose_noise_shift(Config().override(image_size=16), True)[0].diffusion
    assert torch.equal(Schedule.from_settings(settled).betas, Schedule.named("cosine", 1000, shift_for_size(16)).betas)
