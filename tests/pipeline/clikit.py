"""Helpers of the pipeline tests: run the CLI in a subprocess and check one-line errors."""

import os
import subprocess
import sys


def cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "difforge", *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def one_line_error(res, *words):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], (w, res.stderr)
