"""DDP on CPU with gloo, 2 processes, as torchrun launches them."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.test_cli import TINY_FLAGS

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def _flags(batch, steps):
    f = list(TINY_FLAGS)
    f[f.index("--batch-size") + 1] = str(batch)
    f[f.index("--max-steps") + 1] = str(steps)
    # SGD: an update linear in the gradient, so float-level differences in the all-reduce stay float-level
    # (Adam would amplify them for parameters whose gradients are ~0)
    return f + ["--builtin-per-class", "4", "--checkpoint-every", "1000", "--log-every", "1", "--lr", "0.05", "--optimizer", "sgd"]


def _run(nproc, runs, run, batch, steps, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFORGE_DIST_TIMEOUT": "120"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "difforge", "train"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", "difforge", "train"]
    res = subprocess.run(cmd + ["--runs-dir", str(runs), "--run-name", run, *_flags(batch, steps), *extra],
                         capture_output=True, text=True, env=env, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _weights(run_dir):
    sd = load_file(str(run_dir / "checkpoints" / "state.safetensors"))
    return {k: v for k, v in sd.items() if k.startswith("model/")}


def test_two_processes_match_one_process_with_double_batch_and_resume(tmp_path):
    two = _run(2, tmp_path, "two", 4, 4)
    one = _run(1, tmp_path, "one", 8, 4)
    assert "global batch 8" in two.stderr and "2 process(es)" in two.stderr
    a, b = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    # only rank 0 wrote: one metrics row per step, one log, one set of checkpoints
    rows = (tmp_path / "two" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["ema.safetensors", "last.safetensors", "state.safetensors"]
    assert not list((tmp_path / "two").rglob("*.tmp"))
    # a run saved by 2 processes resumes with 1 and continues the same run
    _run(1, tmp_path, "two", 8, 6, "--resume")
    _run(1, tmp_path, "one", 8, 6, "--resume")
    a, b = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_two_compiled_processes_check_alike_and_match_one_eager_process(tmp_path):
    """--compile under DDP: both ranks check the compiled gradients on their own batch and vote, the
    run switches to the compiled network in DDP, and ends where one eager process with the double
    batch ends (float round-off apart)."""
    _run(2, tmp_path, "two", 4, 5, "--compile")
    _run(1, tmp_path, "one", 8, 5)
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "gradients agree with eager mode's" in log and "training compiled" in log and "disagree" not in log
    a, b = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
