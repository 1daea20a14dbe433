"""`difforge serve` as a user meets it: refusals are one line (the real server: test_load.py)."""

import subprocess
import sys


def _main(capsys, *args):
    """The CLI in this process (fast)."""
    from difforge.cli.main import main

    code = main(["serve", *map(str, args)])
    return code, capsys.readouterr()


def _one_line_error(code, out, *words):
    assert code == 2, out
    lines = [l for l in out.err.strip().splitlines() if "error" in l]
    assert len(lines) == 1, out.err
    for w in words:
        assert w in lines[0], (w, out.err)


def test_open_host_without_token_is_refused(capsys, monkeypatch, tiny_model):
    monkeypatch.delenv("DIFFORGE_TOKEN", raising=False)
    _one_line_error(*_main(capsys, tiny_model, "--host", "0.0.0.0"), "0.0.0.0", "--token", "--insecure")


def test_no_model_and_bad_limit(capsys, tmp_path):
    _one_line_error(*_main(capsys), "model file")
    _one_line_error(*_main(capsys, tmp_path / "nope.safetensors"), "nope.safetensors")
    _one_line_error(*_main(capsys, tmp_path / "x.safetensors", "--queue", "0"), "queue")
    _one_line_error(*_main(capsys, "--models-dir", tmp_path), "no .safetensors")


def test_help_lists_flags():
    res = subprocess.run([sys.executable, "-m", "difforge", "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for flag in ("--models-dir", "--host", "--port", "--token", "--insecure", "--max-num", "--max-steps", "--queue", "--device"):
        assert flag in res.stdout
