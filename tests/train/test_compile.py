"""--compile: torch.compile'd training gives the eager run's numbers within float round-off."""

import csv
import shutil

import pytest

from difforge.config import Config
from difforge.errors import ConfigError
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
    from safetensors.torch import load_file

    wa = load_file(eager.run_dir / "checkpoints" / "last.safetensors")
    wb = load_file(compiled.run_dir / "checkpoints" / "last.safetensors")
    assert wa.keys() == wb.keys()  # no "_orig_mod." prefixes: the file is the plain network's
    assert max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) < 1e-3


def test_compile_must_be_a_bool():
    with pytest.raises(ConfigError, match="compile"):
        Config().override(compile="yes").validate()
