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


def _grey_or_rgb(channels, size=64):
    return load_training_images(Config().override(image_size=size, builtin_per_class=2, channels=channels).data, progress=False)


def test_patch_size_folds_2x2_from_64_px_where_the_first_level_is_wide_enough(caplog):
    rgb, grey = _grey_or_rgb(3), _grey_or_rgb(1)
    cfg = Config().override(image_size=64)  # the defaults: unet-tiny, base 32
    assert autonet.choose_patch(cfg, rgb).model.network_options == {"patch_size": 2}
    assert "patch size: 2" in caplog.text
    assert autonet.choose_patch(cfg.override(network="auto"), grey).model.network_options == {"patch_size": 2}
    assert autonet.choose_patch(cfg.override(image_size=32), _grey_or_rgb(3, 32)).model.network_options == {}
    narrow = cfg.override(network_options={"base_channels": 8})  # 4 x 3 channels would not fit 8
    assert autonet.choose_patch(narrow, rgb).model.network_options == {"base_channels": 8}
    assert autonet.choose_patch(narrow, grey).model.network_options == {"base_channels": 8, "patch_size": 2}
    sixteen = cfg.override(network_options={"base_channels": 16})  # sr's input is x_t + the up-sampled image: 2 x 3 channels
    assert autonet.choose_patch(sixteen, rgb).model.network_options["patch_size"] == 2
    assert "patch_size" not in autonet.choose_patch(sixteen.override(task="sr"), rgb).model.network_options
    assert autonet.choose_patch(cfg.override(task="sr"), rgb).model.network_options == {"patch_size": 2}
    mine = cfg.override(network_options={"patch_size": 1})  # the user's choice stays
    assert autonet.choose_patch(mine, rgb) is mine
    for other in ("dit-s/2", "adm", "cspdarkunet-small"):  # networks without a UNet's fold keep their own
        assert autonet.choose_patch(cfg.override(network=other), rgb).model.network_options == {}


def _patch(run):
    from difforge.modelfile import read_metadata

    recorded = Config.load(run.run_dir / "config.yaml").model.network_options["patch_size"]
    assert read_metadata(run.model_file)["network"]["config"]["patch_size"] == recorded
    return recorded


def test_patch_size_of_a_fine_tune_is_its_files_and_a_resume_keeps_its_network(tmp_path):
    """A file trained at full resolution (before folding was the default, or by choice) fine-tunes
    and resumes at full resolution, even where a new run would fold."""
    full = {**TINY_NET, "patch_size": 1}
    r = Trainer(progress=False, **tiny_overrides(tmp_path, image_size=64, max_steps=1, network_options=full, channels=1)).fit()
    assert _patch(r) == 1
    cfg = Config().override(image_size=64, network_options={**TINY_NET})
    assert autonet.choose_patch(cfg, _grey_or_rgb(1)).model.network_options["patch_size"] == 2  # a new run folds
    assert autonet.choose_patch(cfg, _grey_or_rgb(1), pretrain=str(r.model_file)).model.network_options["patch_size"] == 1
    tuned = Trainer(progress=False, pretrain=str(r.model_file),
                    **tiny_overrides(tmp_path, run="ft", image_size=64, max_steps=1, channels=1)).fit()
    assert _patch(tuned) == 1
    # a run written before patch_size existed: its config.yaml has no such option; resuming keeps the checkpoint's network
    import yaml

    cfg_file = r.run_dir / "config.yaml"
    old = yaml.safe_load(cfg_file.read_text())
    del old["model"]["network_options"]["patch_size"]
    cfg_file.write_text(yaml.safe_dump(old))
    resumed = Trainer(progress=False, resume=str(r.run_dir), max_steps=2).fit()
    assert resumed.steps == 2


def test_presets_of_other_tools_keep_full_resolution():
    from difforge.train.presets import preset_values

    for name in ("iddm", "classic"):
        assert preset_values(name)["network_options"]["patch_size"] == 1



def test_the_probe_times_steps_in_the_runs_precision(data, monkeypatch):
    """Which layout is faster depends on the precision (fp32 and bf16 use other kernels), so the
    probe runs under the run's autocast, as the training step will."""
    import torch

    build, seen = autonet.registry.build, []

    def recording_build(*a, **k):
        net = build(*a, **k)
        net.register_forward_hook(lambda m, i, o: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
        return net

    monkeypatch.setattr(autonet.registry, "build", recording_build)
    cfg = Config().override(image_size=16, batch_size=4, network_options=dict(TINY_NET))
    for precision, expected in (("bf16", (True, torch.bfloat16)), ("fp32", (False, None))):
        seen.clear()
        autonet.probe_step_seconds("unet-tiny", cfg.override(precision=precision), data, torch.device("cpu"), steps=1)
        assert seen and all((on, dtype if on else None) == expected for on, dtype in seen), (precision, seen)


def test_the_probe_of_a_text_run_builds_its_cross_attention_and_feeds_it_captions(data, monkeypatch):
    """A text run's step includes the caption encoder and cross-attention: the probe times that step,
    with the run's own tokenised captions (the built-in set's), not the network without text."""
    import torch

    from difforge.train.text_cond import ENCODER_DEFAULTS

    build, seen = autonet.registry.build, []

    def recording_build(*a, **k):
        net = build(*a, **k)
        net.register_forward_pre_hook(lambda m, args, kw: seen.append((k.get("context_dim"), kw.get("context"))), with_kwargs=True)
        return net

    monkeypatch.setattr(autonet.registry, "build", recording_build)
    cfg = Config().override(image_size=16, batch_size=4, network_options=dict(TINY_NET), text_encoder="builtin", conditional=False,
                          builtin_per_class=6)
    autonet.probe_step_seconds("unet-tiny", cfg, data, torch.device("cpu"), steps=1)
    assert seen and all(dim == ENCODER_DEFAULTS["dim"] for dim, _ in seen)
    ids = seen[0][1]
    assert ids is not None and ids.shape[0] == 4 and not ids.is_floating_point() and (ids > 3).any()  # real words, not padding
    seen.clear()
    autonet.probe_step_seconds("unet-tiny", Config().override(image_size=16, batch_size=4, network_options=dict(TINY_NET)), data, torch.device("cpu"), steps=1)
    assert seen and all(dim is None and ctx is None for dim, ctx in seen)
