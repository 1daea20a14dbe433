"""``cascade``: when a run trains a half-size model beside an x2 upsampler, and what its model file samples.

The end-to-end test trains both processes for a few steps and checks the cascade ``sample`` makes
by default against the same cascade spelled out by hand (same pixels), and the clear message when
the upsampler is missing."""

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from difforge.config import Config
from difforge.errors import ConfigError, UserError
from difforge.train import cascade
from difforge.train.noise_shift import shift_for_size
from difforge.train.presets import preset_values

from ..conftest import tiny_overrides


def _auto(**kw):
    return Config().override(**{**dict(image_size=64, max_minutes=12.0, device="cpu"), **kw})


class _Dist:
    enabled = True


def test_auto_cascades_a_new_cpu_run_from_64_px_with_a_budget():
    assert cascade.why_not(_auto(), new=True, threads=2) is None
    config = cascade.choose_cascade(_auto(), new=True) if torch.get_num_threads() >= 2 else None
    decided = cascade.choose_cascade(_auto(cascade=True), new=True)
    assert decided.train.cascade is True and decided.data.image_size == 32 and cascade.full_size(decided) == 64
    if config is not None:
        assert config.train.cascade is True and config.data.image_size == 32


@pytest.mark.parametrize("change, new, threads, words", [
    ({}, False, 2, "resumed"),
    (dict(image_size=32), True, 2, "64 px"),
    (dict(image_size=66), True, 2, "divisible"),
    (dict(max_minutes=None, max_steps=1000), True, 2, "time budget"),
    (dict(network_options={"patch_size": 2}), True, 2, "patch size"),
    (dict(text_encoder="builtin"), True, 2, "pixel-space"),
    (dict(task="sr"), True, 2, "pixel-space"),
    (dict(mask_weight=10.0), True, 2, "masks"),
    ({}, True, 1, "one thread"),
])
def test_auto_trains_one_model_elsewhere(change, new, threads, words):
    config = _auto(**change)
    reason = cascade.why_not(config, new=new, threads=threads)
    assert reason is not None and words in reason
    if threads == 2 and new:  # the decision follows the reason
        decided = cascade.choose_cascade(config, new=new)
        assert decided.train.cascade is False and decided.data.image_size == config.data.image_size


def test_auto_does_not_cascade_a_fine_tune():
    assert "fine-tune" in cascade.why_not(_auto(), new=True, threads=2, pretrain="model.safetensors")
    assert cascade.choose_cascade(_auto(), new=True, pretrain="model.safetensors").data.image_size == 64


def test_auto_does_not_cascade_several_processes_or_a_gpu(monkeypatch):
    assert "several processes" in cascade.why_not(_auto(), new=True, dist=_Dist(), threads=2)
    monkeypatch.setattr(cascade, "resolve_device", lambda name: torch.device("cuda"))
    assert "CPUs" in cascade.why_not(_auto(device="auto"), new=True, threads=2)


def test_a_resumed_cascade_keeps_its_half_size():
    resumed = cascade.choose_cascade(_auto(cascade=True, image_size=32), new=False)
    assert resumed.data.image_size == 32 and resumed.train.cascade is True


@pytest.mark.parametrize("change, words", [(dict(image_size=34), "divisible"), (dict(task="vae"), "pixel-space")])
def test_cascade_true_refuses_what_it_cannot_cascade(change, words):
    with pytest.raises(ConfigError, match=words):
        cascade.choose_cascade(_auto(cascade=True, **change), new=True)
    with pytest.raises(ConfigError, match="distributed"):
        cascade.choose_cascade(_auto(cascade=True), new=True, dist=_Dist())


def test_cascade_scale_4_trains_a_quarter_size_model_and_an_x4_upsampler(tmp_path):
    base = cascade.choose_cascade(_auto(cascade=True, cascade_scale=4, runs_dir=str(tmp_path), run="r"), new=True)
    assert (base.data.image_size, base.train.cascade_scale, cascade.full_size(base)) == (16, 4, 64)
    up = cascade.upsampler_config(base)
    assert (up.sr.scale, up.data.image_size) == (4, 64)
    assert cascade.link(base)["scale"] == 4 and cascade.link(base)["image_size"] == 64
    assert "x4 upsampler" in cascade.why_not(_auto(cascade_scale=4, image_size=68), new=True, threads=2)  # 68 / 4 = 17: odd
    with pytest.raises(ConfigError, match="divisible by 8"):
        cascade.choose_cascade(_auto(cascade=True, cascade_scale=4, image_size=68), new=True)


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, line):
        self.lines.append(line)


def test_an_x4_cascade_without_noise_aug_says_what_it_costs():
    plain, aug = _Log(), _Log()
    cascade.choose_cascade(_auto(cascade=True, cascade_scale=4, noise_aug=0.0), new=True, log=plain)
    cascade.choose_cascade(_auto(cascade=True, cascade_scale=4, noise_aug=0.15), new=True, log=aug)
    assert any("without --noise-aug" in line for line in plain.lines)
    assert not any("without --noise-aug" in line for line in aug.lines) and "x4 upsampler" in aug.lines[0]


def test_noise_aug_auto_is_on_for_an_x4_upsampler_only():
    log = _Log()
    x4 = cascade.choose_cascade(_auto(cascade=True, cascade_scale=4), new=True, log=log)
    assert x4.sr.noise_aug == 0.15 and cascade.upsampler_config(x4).sr.noise_aug == 0.15
    assert "x4 upsampler (noise augmentation 0.15) trained" in log.lines[0] and not any("without --noise-aug" in line for line in log.lines)
    assert cascade.choose_cascade(_auto(cascade=True, cascade_scale=2), new=True).sr.noise_aug == 0.0
    assert cascade.choose_cascade(_auto(cascade=False), new=True).sr.noise_aug == 0.0
    assert cascade.choose_cascade(_auto(task="sr", scale=4), new=True).sr.noise_aug == 0.0  # train-sr: off unless told
    # a resumed cascade from before the setting (cascade_scale auto: x2) stays without
    assert cascade.choose_cascade(_auto(cascade=True, image_size=32), new=False).sr.noise_aug == 0.0


def test_auto_scale_is_settled_into_the_config_and_a_config_from_before_it_stays_x2(monkeypatch):
    decided = cascade.choose_cascade(_auto(cascade=True), new=True)  # the built-in defects: textures, x2
    assert decided.train.cascade_scale == 2 and decided.data.image_size == 32  # config.yaml keeps the number, not auto
    monkeypatch.setattr(cascade, "choose_scale", lambda config: (4, "shapes"))
    log = _Log()
    assert cascade.choose_cascade(_auto(cascade=True), new=True, log=log).data.image_size == 16
    assert "cascade scale auto: x4, shapes" in log.lines
    # a run's config.yaml from before the setting: cascade true, the half size, no cascade_scale (auto)
    resumed = cascade.choose_cascade(_auto(cascade=True, image_size=32), new=False)
    assert resumed.data.image_size == 32 and cascade.scale_of(resumed) == cascade.LEGACY_SCALE == 2 and cascade.full_size(resumed) == 64
    assert cascade.upsampler_config(resumed).sr.scale == 2


@pytest.mark.parametrize("kw,reason", [(dict(cascade=False), "cascade false"), (dict(image_size=32), "64 px")])
def test_cascade_scale_without_a_cascade_is_refused_with_the_reason(kw, reason):
    with pytest.raises(ConfigError, match=f"--cascade-scale 4 .*{reason}.*drop --cascade-scale"):
        cascade.choose_cascade(_auto(cascade_scale=4, **kw), new=True)
    with pytest.raises(ConfigError, match="cascade_scale=3"):
        Config().override(cascade_scale=3)


def test_train_cli_cascade_scale_is_checked(tmp_path, capsys):
    from difforge.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--runs-dir", str(tmp_path), "--quiet", "--image-size", "64", "--cascade-scale", "3"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "choose auto, 2 or 4, not '3'" in err and "Traceback" not in err
    code = main(["train", "--runs-dir", str(tmp_path), "--quiet", "--image-size", "64", "--cascade-scale", "4", "--cascade", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "--cascade-scale 4" in err and "Traceback" not in err


def test_iddm_and_classic_presets_train_one_model():
    assert preset_values("iddm")["cascade"] is False and preset_values("classic")["cascade"] is False
    assert "cascade" not in preset_values("fast")  # the default: auto


def test_upsampler_config_is_train_sr_at_full_size_on_the_same_data(tmp_path):
    base = cascade.choose_cascade(_auto(cascade=True, runs_dir=str(tmp_path), run="r", seed=7, builtin_per_class=9,
                                        network_options={"base_channels": 8}, lr=5e-4), new=True)
    up = cascade.upsampler_config(base)
    assert (up.train.task, up.sr.scale, up.data.image_size) == ("sr", 2, 64)
    assert (up.train.seed, up.train.max_minutes, up.data.builtin_per_class) == (7, 12.0, 9)
    assert up.train.runs_dir == str(tmp_path / "r") and up.train.run == "upsampler" and up.train.cascade is False
    assert up.model.network_options == {} and up.train.lr == "auto"  # train-sr's own network and LR, as measured
    assert up.sr.noise_aug == 0.0  # measured: the textures lose with it (README)
    assert cascade.upsampler_config(base.override(noise_aug=0.15)).sr.noise_aug == 0.15  # difforge train --noise-aug


@pytest.mark.parametrize("kw,reason", [(dict(cascade=False), "cascade false: --cascade false or a preset"),
                                       (dict(cascade=preset_values("iddm")["cascade"]), "or a preset"), (dict(max_minutes=None), "time budget")])
def test_noise_aug_without_an_upsampler_to_train_is_refused_with_the_reason(kw, reason):
    with pytest.raises(ConfigError, match=f"--noise-aug 0.1 .*{reason}.*drop --noise-aug"):
        cascade.choose_cascade(_auto(noise_aug=0.1, **kw), new=True)
    assert cascade.choose_cascade(_auto(noise_aug=0.1, cascade=True), new=True).train.cascade is True


def test_train_cli_noise_aug_reaches_the_config_and_is_refused_without_a_cascade(tmp_path, capsys):
    from difforge.cli.main import main

    code = main(["train", "--runs-dir", str(tmp_path), "--quiet", "--image-size", "64", "--noise-aug", "0.1", "--cascade", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "--noise-aug 0.1" in err and "Traceback" not in err


def test_split_threads_gives_both_processes_a_share():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert cascade.split_threads() == (2, 1) and torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert cascade.split_threads() == (1, 1)
    finally:
        torch.set_num_threads(before)


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(text)


def _sleeper(tmp_path, code="import time; time.sleep(60)"):
    run = tmp_path / "base" / "upsampler"
    run.mkdir(parents=True)
    return cascade.Upsampler(subprocess.Popen([sys.executable, "-c", code]), run, _Log())


def test_an_upsampler_not_stopped_by_the_same_ctrl_c_is_told_to_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(cascade, "STOP_GRACE_S", 0.2)
    up = _sleeper(tmp_path)
    assert up.finish(stopped_early=True) == -signal.SIGTERM  # SIGTERM: the trainer saves and returns
    assert "failed" in up.log.lines[-1] or "stopped" in up.log.lines[-1]


def test_a_failed_upsampler_is_reported_with_its_log(tmp_path):
    up = _sleeper(tmp_path, "raise SystemExit(2)")
    assert up.finish(stopped_early=False) == 2
    assert "failed (exit status 2)" in up.log.lines[-1] and "upsampler.log" in up.log.lines[-1] and "--upscale none" in up.log.lines[-1]


@pytest.fixture(scope="module")
def cascade_run(tmp_path_factory):
    """A tiny cascade: a 16 px model and its x2 upsampler to 32 px (noise-augmented), 3 steps each."""
    from difforge.train.trainer import Trainer

    tmp = tmp_path_factory.mktemp("cascade")
    result = Trainer(progress=False, **tiny_overrides(tmp, image_size=32, cascade=True, max_steps=3, builtin_per_class=4,
                                                      noise_aug=0.1)).fit()
    return result


def test_a_cascade_run_writes_both_models_and_links_them(cascade_run):
    from difforge.modelfile import read_metadata

    meta = read_metadata(cascade_run.model_file)
    assert meta["data"]["image_size"] == 16 and meta["cascade"]["image_size"] == 32 and meta["cascade"]["scale"] == 2
    up_file = cascade_run.run_dir / "upsampler" / "checkpoints" / "ema.safetensors"
    up_meta = read_metadata(up_file)
    assert up_meta["data"]["image_size"] == 32 and up_meta["inputs"]["low_res"] and up_meta["train"]["step"] == 3
    assert up_meta["inputs"]["low_res"]["noise_aug"]["max"] == 0.1  # the base run's --noise-aug reached the upsampler
    assert (cascade_run.run_dir / "upsampler.log").exists() and (cascade_run.run_dir / "upsampler.yaml").exists()
    assert "cascade: true" in (cascade_run.run_dir / "config.yaml").read_text()
    assert "16px x 3 channel(s)" in (cascade_run.run_dir / "log.txt").read_text()  # the base trains on half-size images


def test_an_x4_cascade_run_samples_at_four_times_its_model_s_size(tmp_path):
    """--cascade-scale 4 end to end: an 8 px model and an x4 upsampler to 32 px, 2 steps each, linked."""
    from difforge.modelfile import read_metadata
    from difforge.pipeline import Pipeline
    from difforge.train.trainer import Trainer

    result = Trainer(progress=False, **tiny_overrides(tmp_path, image_size=32, cascade=True, cascade_scale=4, max_steps=2,
                                                      builtin_per_class=2)).fit()
    meta = read_metadata(result.model_file)
    assert meta["data"]["image_size"] == 8 and meta["cascade"]["scale"] == 4 and meta["cascade"]["image_size"] == 32
    up_meta = read_metadata(result.run_dir / "upsampler" / "checkpoints" / "ema.safetensors")
    assert up_meta["data"]["image_size"] == 32 and up_meta["train"]["step"] == 2
    assert "cascade_scale: 4" in (result.run_dir / "config.yaml").read_text()
    # the small base trains less noisy (noise_shift auto, train/noise_shift.py); the upsampler keeps the schedule as drawn
    assert meta["diffusion"]["noise_shift"] == shift_for_size(8) < 1 and up_meta["diffusion"]["noise_shift"] == 1.0
    assert f"noise_shift: {shift_for_size(8)}" in (result.run_dir / "config.yaml").read_text()
    assert "noise shift auto: 0.35 (a 8 px" in (result.run_dir / "log.txt").read_text()
    out = Pipeline.from_checkpoint(result.model_file).generate(2, "all", seed=1, steps=2)
    assert tuple(out.images.shape[1:3]) == (32, 32)


def test_generate_upscales_through_the_linked_upsampler_as_the_explicit_cascade_does(cascade_run):
    from difforge.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(cascade_run.model_file)
    assert (pipe.image_size, pipe.output_size) == (16, 32) and pipe.describe()["cascade"]["image_size"] == 32
    auto = pipe.generate(2, "all", seed=3, steps=3)
    by_hand = Pipeline.from_checkpoint(cascade_run.model_file).generate(
        2, "all", seed=3, steps=3, upscale=str(cascade_run.run_dir / "upsampler" / "checkpoints" / "ema.safetensors"))
    own = pipe.generate(2, "all", seed=3, steps=3, upscale=None)
    assert tuple(auto.images.shape[1:3]) == (32, 32) and tuple(own.images.shape[1:3]) == (16, 16)
    assert torch.equal(auto.images, by_hand.images) and auto.labels.tolist() == own.labels.tolist()


def test_sample_cli_cascades_by_default_and_not_with_upscale_none(cascade_run, tmp_path):
    from PIL import Image

    def sample(*extra):
        out = tmp_path / f"out{len(extra)}"
        res = subprocess.run([sys.executable, "-m", "difforge", "sample", str(cascade_run.model_file), "--num", "2", "--steps", "3",
                              "--quiet", "--out", str(out), *extra], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stdout, [Image.open(p).size for p in sorted(out.glob("*.png"))]

    said, sizes = sample()
    assert sizes == [(32, 32)] * 2 and "cascade: 16 px images upscaled x2" in said
    said, sizes = sample("--upscale", "none")
    assert sizes == [(16, 16)] * 2 and "upscaled" not in said


def test_a_model_file_moved_without_its_upsampler_says_what_to_do(cascade_run, tmp_path):
    from difforge.pipeline import Pipeline

    moved = tmp_path / "moved" / "ema.safetensors"
    moved.parent.mkdir()
    shutil.copy(cascade_run.model_file, moved)
    hidden = cascade_run.run_dir / "upsampler" / "checkpoints" / "ema.safetensors"
    aside = tmp_path / "aside.safetensors"
    shutil.move(hidden, aside)
    try:
        pipe = Pipeline.from_checkpoint(moved)
        with pytest.raises(UserError, match="--upscale FILE.*upsampler.safetensors.*--upscale none for 16 px"):
            pipe.generate(1, seed=0, steps=2)
        assert tuple(pipe.generate(1, seed=0, steps=2, upscale=None).images.shape[1:3]) == (16, 16)
        shutil.copy(aside, moved.parent / "upsampler.safetensors")  # the file beside it, as the message says
        assert tuple(Pipeline.from_checkpoint(moved).generate(1, seed=0, steps=2).images.shape[1:3]) == (32, 32)
    finally:
        shutil.move(aside, hidden)


def test_resuming_a_cascade_resumes_its_upsampler_with_the_new_limit(cascade_run, tmp_path):
    from difforge.modelfile import read_metadata
    from difforge.train.trainer import Trainer

    run = tmp_path / "copy"
    shutil.copytree(cascade_run.run_dir, run)
    result = Trainer(progress=False, resume=str(run), max_steps=5).fit()
    assert result.steps == 5 and read_metadata(result.model_file)["data"]["image_size"] == 16
    assert read_metadata(run / "upsampler" / "checkpoints" / "ema.safetensors")["train"]["step"] == 5
    log = (run / "upsampler.log").read_text()
    assert "resuming" in log and log.count("model file:") == 2


def test_the_model_card_says_the_samples_come_out_upscaled(cascade_run):
    from difforge.export.card import model_card

    card = model_card(cascade_run.model_file)
    assert "16 x 16 px" in card and "upscales them x2 to 32 x 32 px" in card and "--upscale none" in card


def test_serve_gives_the_cascade_s_full_size_images(cascade_run):
    pytest.importorskip("fastapi")
    import base64
    import io
    import warnings

    from PIL import Image

    from difforge.pipeline import Pipeline
    from difforge.serve import ServeSettings, create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient

    pipe = Pipeline.from_checkpoint(cascade_run.model_file, device="cpu", precision="fp32")
    with TestClient(create_app({"c": pipe}, ServeSettings())) as client:
        assert client.get("/v1/models").json()["models"][0]["image_size"] == 32
        res = client.post("/v1/generate", json={"num": 1, "steps": 2, "seed": 0})
        assert res.status_code == 200, res.text
        pic = Image.open(io.BytesIO(base64.b64decode(res.json()["images"][0]["png_base64"])))
        assert pic.size == (32, 32)


def test_ctrl_c_stops_both_processes_with_their_checkpoints(tmp_path):
    import os
    import time

    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "difforge", "train", "--image-size", "32", "--cascade", "--max-steps", "100000",
                             "--builtin-per-class", "4", "--runs-dir", str(runs), "--run", "c", "--quiet", "--checkpoint-every", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # its own terminal group
    metrics = [runs / "c" / "metrics.csv", runs / "c" / "upsampler" / "metrics.csv"]
    deadline = time.monotonic() + 240
    while not all(m.exists() and m.read_text().count("\n") > 2 for m in metrics):  # both are training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 130, out
    for run in (runs / "c", runs / "c" / "upsampler"):
        assert (run / "checkpoints" / "state.safetensors").exists() and (run / "checkpoints" / "ema.safetensors").exists()
    assert "resume with" in out and "upsampler stopped early; resume both with" in out
