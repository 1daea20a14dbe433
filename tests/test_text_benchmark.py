"""The text benchmark's command line (benchmarks/text_conditioning.py): what it refuses before any work."""

import sys

import pytest

from benchmarks import text_conditioning


def test_several_runs_dirs_are_only_for_scoring_trained_models(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["text_conditioning.py", "--runs-dir", str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(SystemExit) as stop:
        text_conditioning.main()
    assert stop.value.code == 2
    assert "several --runs-dir are for --reuse" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before writing any data
