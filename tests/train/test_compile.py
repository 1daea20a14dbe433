"""--compile: torch.compile'd training gives the eager run's numbers within float round-off;
``compile: auto`` compiles only long runs with a working toolchain; a compiled run resumes exactly."""

import csv
import shutil

import pytest
import torch
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


def test_compile_must_be_a_bool():
    with pytest.raises(ConfigError, match="compile"):
        Config().override(compile="yes").validate()
    assert Config().train.compile is False


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


def test_compile_with_bf16_on_a_cpu_is_refused_before_anything_trains(tmp_path):
    """torch 2.13's Inductor computes wrong bf16 gradients for a UNet on a CPU (compiling.py)."""
    with pytest.raises(ConfigError, match="bf16 on a CPU"):
        Trainer(progress=False, **tiny_overrides(tmp_path, compile=True, precision="bf16")).fit()
    assert not (tmp_path / "runs" / "t" / "checkpoints").exists()


def test_compile_without_a_toolchain_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    assert "no C++ compiler" in compiling.toolchain_problem(torch.device("cpu"))
    with pytest.raises(ConfigError, match="--compile cannot run here: no C\\+\\+ compiler"):
        compiling.check_compile(Config().override(compile=True, precision="fp32", device="cpu"))
    compiling.check_compile(Config().override(compile=False, precision="bf16", device="cpu"))  # nothing to check


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_the_toolchain_check_compiles_here():
    assert compiling.toolchain_problem(torch.device("cpu")) is None


@pytest.mark.parametrize("argv, value", [([], None), (["--compile"], True), (["--compile", "False"], False), (["--no-compile"], False)])
def test_the_compile_flag(argv, value):
    from difforge.cli.main import build_parser
    from difforge.cli.train import overrides_from_args

    args = build_parser().parse_args(["train", *argv])
    assert args.compile == value
    assert overrides_from_args(args).get("compile") == value
