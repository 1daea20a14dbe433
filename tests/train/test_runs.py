"""`difforge runs`: every run of a folder with its state, read from the run's files."""

import os
import shutil
import time

import pytest

from difforge.cli.main import main
from difforge.train.runs import RUNNING_WINDOW_S, format_duration, list_runs, summarize
from tests.export.runkit import train_tiny_run


def _strip_end(run, keep_stopped=False):
    """log.txt as a run that has not ended (or was interrupted) leaves it."""
    lines = (run / "log.txt").read_text().splitlines()
    lines = [ln for ln in lines if " model file: " not in ln and " preview grid: " not in ln]
    if keep_stopped:
        lines += [lines[-1][:20] + f"stopped at step 12; resume with: difforge train --resume {run}",
                  lines[-1][:20] + f"model file: {run}/checkpoints/ema.safetensors"]
    (run / "log.txt").write_text("\n".join(lines) + "\n")


def _age(run, seconds):
    old = time.time() - seconds
    for p in run.rglob("*"):
        os.utime(p, (old, old))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    src = train_tiny_run(tmp_path_factory.mktemp("runs_src"))
    root = tmp_path_factory.mktemp("runs")
    for name in ("done", "live", "halted", "crashed", "corrupt", "gutted"):
        shutil.copytree(src, root / name)
    _age(root / "done", 3600)
    _strip_end(root / "live")  # mid-training: metrics.csv written just now, no end line
    (root / "live" / "metrics.csv").touch()
    _strip_end(root / "halted", keep_stopped=True)  # Ctrl-C: resumable
    _strip_end(root / "crashed")  # killed an hour ago: no end line, nothing written since
    _age(root / "crashed", 3600)
    model = root / "corrupt" / "checkpoints" / "ema.safetensors"  # a truncated model file
    model.write_bytes(model.read_bytes()[:100])
    _age(root / "corrupt", 3600)
    (root / "gutted" / "config.yaml").unlink()  # files missing
    (root / "gutted" / "metrics.csv").unlink()
    _age(root / "gutted", 3600)
    (root / "not-a-run").mkdir()  # an empty folder is no run
    return root


def test_states_from_files(runs_dir):
    states = {r.name: r.state for r in list_runs(runs_dir)}
    assert states == {"done": "finished", "live": "running", "halted": "interrupted", "crashed": "stopped",
                      "corrupt": "broken", "gutted": "broken"}
    done = summarize(runs_dir / "done")
    assert done.steps == 12 and done.last_loss is not None and done.elapsed_s > 0
    assert done.model_file == runs_dir / "done" / "checkpoints" / "ema.safetensors"
    assert "model file unreadable" in summarize(runs_dir / "corrupt").note
    assert "config.yaml missing" in summarize(runs_dir / "gutted").note
    assert "--resume" in summarize(runs_dir / "crashed").note
    # a running run that stops writing becomes stopped once the window has passed
    assert summarize(runs_dir / "live", now=time.time() + RUNNING_WINDOW_S + 1).state == "stopped"


def test_cli_table_lists_all_three_kinds(runs_dir, capsys):
    assert main(["runs", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()[2:] if ln and not ln.startswith(" ")}
    assert rows["done"] == "finished" and rows["live"] == "running" and rows["corrupt"] == "broken"
    assert "not-a-run" not in rows
    header = out.splitlines()[0].split()
    assert header[:4] == ["name", "state", "steps", "last"] and "checkpoints/ema.safetensors" in out


def test_best_metric_and_json(runs_dir, capsys):
    from difforge.train.logging import MetricsCSV

    log = MetricsCSV(runs_dir / "done" / "metrics.csv")
    log.log({"step": 6, "fid": 40.0})
    log.log({"step": 12, "fid": 45.0})
    assert summarize(runs_dir / "done").best == ("fid", 40.0, 6)  # FID: lower is better
    assert main(["runs", str(runs_dir), "--json"]) == 0
    import json

    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["done"]["best"] == ["fid", 40.0, 6] and rows["gutted"]["state"] == "broken"


def test_missing_folder_and_durations(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert [format_duration(s) for s in (None, 5, 125, 3725)] == ["-", "5s", "2m05s", "1h02m"]
