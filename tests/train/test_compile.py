"""--compile: torch.compile'd training gives the eager run's numbers within float round-off;
``compile: auto`` compiles only long runs with a working toolchain; a compiled run resumes exactly."""

import csv
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from difforge.config import Config
from difforge.errors import ConfigError
from difforge.train import compiling
from difforge.train.trainer import Trainer

from ..conftest import tiny_overrides


def _losses(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_matches_eager(tmp_path):
    eager = Trainer(progress=False, **tiny_overrides(tmp_path, run="eager", max_steps=4, ema_select=False)).fit()
    compiled = Trainer(progress=False, **tiny_overrides(tmp_path, run="compiled", max_steps=4, ema_select=False, compile=True)).fit()
    a, b = _losses(eager.run_dir), _losses(compiled.run_dir)
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=1e-3, abs=1e-5)
    wa = load_file(eager.run_dir / "checkpoints" / "last.safetensors")
    wb = load_file(compiled.run_dir / "checkpoints" / "last.safetensors")
    assert wa.keys() == wb.keys()  # no "_orig_mod." prefixes: the file is the plain network's
    assert max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) < 1e-3


def test_compile_must_be_a_bool_or_auto():
    with pytest.raises(ConfigError, match="compile"):
        Config().override(compile="yes").validate()
    assert Config().train.compile == "auto"
    Config().override(compile=False).validate()


NO_COMPILER = shutil.which("c++") is None and shutil.which("g++") is None


@pytest.mark.slow
@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_a_compiled_run_resumes_bit_exactly(tmp_path):
    """Stopped at step 3 and resumed (the resumed process compiles again), a compiled run ends with
    exactly the weights and optimizer state of an uninterrupted compiled run."""
    opts = dict(max_steps=6, ema_select=False, compile=True, lr_schedule="cosine")
    full = Trainer(progress=False, **tiny_overrides(tmp_path, run="full", **opts)).fit()

    def stop_at_3(trainer, step, loss):
        if step == 3:
            trainer.request_stop()

    part = Trainer(progress=False, callbacks=[stop_at_3], **tiny_overrides(tmp_path, run="part", **opts)).fit()
    assert part.interrupted and part.steps == 3
    Trainer(resume=str(part.run_dir), progress=False).fit()
    assert _losses(full.run_dir) == _losses(part.run_dir)
    a, b = (load_file(str(r.run_dir / "checkpoints/state.safetensors")) for r in (full, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("limits, long", [
    (dict(max_minutes=12), True), (dict(max_minutes=3), False), (dict(max_steps=5000), True),
    (dict(max_steps=200), False), (dict(epochs=100), True), (dict(epochs=10), False), ({}, False),
    (dict(max_minutes=12, max_steps=2), False), (dict(max_minutes=12, epochs=200), True),
])
def test_auto_compiles_only_runs_long_enough_to_earn_it_back(limits, long):
    config = Config().override(batch_size=16, **limits)
    assert compiling.long_enough(config, images=600) is long  # 600 images: 38 steps an epoch at batch 16


def _settle(monkeypatch, problem, **kw):
    calls = []
    monkeypatch.setattr(compiling, "toolchain_problem", lambda device: calls.append(device) or problem)
    return compiling.choose_compile(Config().override(**kw), images=600), calls


def test_auto_settles_by_run_length_and_toolchain(monkeypatch, caplog):
    caplog.set_level("INFO", logger="difforge")
    config, calls = _settle(monkeypatch, None, max_minutes=12)
    assert config.train.compile is True and calls == [torch.device("cpu")]
    config, calls = _settle(monkeypatch, "no C++ compiler (g++ or clang++) on PATH", max_minutes=12)
    assert config.train.compile is False and "no C++ compiler" in caplog.text
    config, calls = _settle(monkeypatch, None, max_minutes=2)
    assert config.train.compile is False and calls == []  # a short run does not even test the toolchain
    config, calls = _settle(monkeypatch, None, max_minutes=12, task="vae")
    assert config.train.compile is False and calls == []
    for forced in (True, False):
        config, calls = _settle(monkeypatch, "broken", max_minutes=2, compile=forced)
        assert config.train.compile is forced and calls == []


def test_toolchain_problem_names_a_missing_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    assert "no C++ compiler" in compiling.toolchain_problem(torch.device("cpu"))


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_the_toolchain_check_compiles_here():
    assert compiling.toolchain_problem(torch.device("cpu")) is None


def test_a_short_run_settles_auto_to_eager_in_its_config(tmp_path):
    result = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=2)).fit()
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["train"]["compile"] is False


@pytest.mark.parametrize("argv, value", [([], None), (["--compile"], True), (["--compile", "auto"], "auto"),
                                         (["--compile", "False"], False), (["--no-compile"], False)])
def test_the_compile_flag_takes_auto_or_a_bool(argv, value):
    from difforge.cli.main import build_parser
    from difforge.cli.train import overrides_from_args

    args = build_parser().parse_args(["train", *argv])
    assert args.compile == value
    assert overrides_from_args(args).get("compile") == value
