"""The CLI as a user meets it: real subprocesses, one-line errors, files that open."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_NET

TINY_FLAGS = [
    "--image-size", "16", "--base-channels", str(TINY_NET["base_channels"]), "--channel-mult", "1,2",
    "--num-res-blocks", "1", "--attention-resolutions", "8", "--head-channels", "16",
    "--batch-size", "4", "--max-steps", "2", "--precision", "fp32", "--quiet",
]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "difforge", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def _one_line_error(res, *words):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if "error" in l]
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], (w, res.stderr)


def _folder(root, classes, n=3, size=20):
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / c if c else root
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_help_lists_commands_and_aliases():
    res = cli("--help")
    assert res.returncode == 0 and "train" in res.stdout and "sample" in res.stdout
    res = cli("train", "--help")
    assert "--dataset_path" in res.stdout and "--batch_size" in res.stdout and "--lr_func" in res.stdout


def test_missing_data_folder(tmp_path):
    _one_line_error(cli("train", "--data", tmp_path / "nope", *TINY_FLAGS), "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(cli("train", "--data", tmp_path / "empty", *TINY_FLAGS), "empty")


def test_single_class_with_conditional(tmp_path):
    root = _folder(tmp_path / "d", ["only"])
    _one_line_error(cli("train", "--data", root, "--conditional", *TINY_FLAGS), "--no-conditional")


def test_corrupt_image_listed_then_skipped(tmp_path):
    root = _folder(tmp_path / "d", ["a", "b"])
    (root / "a" / "bad.png").write_bytes(b"not an image at all")
    res = cli("train", "--data", root, "--runs-dir", tmp_path / "runs", *TINY_FLAGS)
    _one_line_error(res, "bad.png", "--skip-bad-images")
    res = cli("train", "--data", root, "--runs-dir", tmp_path / "runs", "--skip-bad-images", *TINY_FLAGS)
    assert res.returncode == 0, res.stderr
    assert "1 bad" in res.stderr


def test_image_size_the_network_cannot_take(tmp_path):
    _one_line_error(cli("train", "--runs-dir", tmp_path, *TINY_FLAGS, "--image-size", "20", "--channel-mult", "1,2,2,2"), "20")


def test_bad_flag_value(tmp_path):
    _one_line_error(cli("train", "--runs-dir", tmp_path, *TINY_FLAGS, "--noise-schedule", "quadratic"), "noise_schedule", "cosine")
    res = cli("train", "--batch-size", "many")
    assert res.returncode == 2 and "invalid int value" in res.stderr and "Traceback" not in res.stderr


def test_bad_model_file(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"garbage")
    _one_line_error(cli("sample", p), "m.safetensors")
    _one_line_error(cli("sample", tmp_path / "missing.safetensors"), "does not exist")


def test_train_flat_folder_with_iddm_aliases_then_sample(tmp_path):
    root = _folder(tmp_path / "flat", [None], n=5)
    res = cli("train", "--dataset_path", root, "--result_path", tmp_path / "runs", "--run_name", "flat", *TINY_FLAGS, "--lr_func", "cosine", "--optim", "adam")
    assert res.returncode == 0, res.stderr
    model = tmp_path / "runs" / "flat" / "checkpoints" / "ema.safetensors"
    assert "unconditional" in res.stderr and model.is_file()
    res = cli("generate", model, "--num", "3", "--steps", "3", "--out", tmp_path / "o", "--npz", "--format", "jpg", "--quiet")
    assert res.returncode == 0, res.stderr
    files = sorted((tmp_path / "o").glob("*.jpg"))
    assert len(files) == 3 and Image.open(files[0]).size == (16, 16)
    assert len(list((tmp_path / "o").glob("*.npz"))) == 1


def test_sample_per_class_and_info(tiny_model, tmp_path):
    res = cli("sample", tiny_model, "--num", "2", "--class", "all", "--steps", "2", "--out", tmp_path / "s", "--grid", "--quiet")
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "s").glob("crack_*.png"))) == 2
    assert (tmp_path / "s-grid_patch.png").is_file()  # grids beside the sample folder, not among the samples
    res = cli("sample", tiny_model, "--class", "dent", "--steps", "2", "--out", tmp_path / "s2")
    _one_line_error(res, "dent", "scratch")
    res = cli("info", tiny_model)
    assert res.returncode == 0 and "scratch" in res.stdout and "parameters" in res.stdout
    res = cli("info", "--network", "unet", "--image-size", "32")
    assert res.returncode == 0 and "forward_gflops_per_image" in res.stdout


def test_data_defects_writes_builtin_set(tmp_path):
    res = cli("data", "defects", tmp_path / "d", "--size", "32", "--per-class", "3", "--seed", "1")
    assert res.returncode == 0, res.stderr
    classes = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert classes == sorted(["scratch", "inclusion", "crack", "patch"])
    img = Image.open(next((tmp_path / "d" / "crack").iterdir()))
    assert img.size == (32, 32)


def test_config_file_with_flag_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  batch_size: 4\n  max_steps: 1\ndiffusion:\n  noise_schedule: cosine\n")
    res = cli("train", "--config", cfg, "--runs-dir", tmp_path / "runs", "--run", "c", *TINY_FLAGS[:-5], "--max-steps", "2", "--quiet", "--builtin-per-class", "3")
    assert res.returncode == 0, res.stderr
    saved = (tmp_path / "runs" / "c" / "config.yaml").read_text()
    assert "noise_schedule: cosine" in saved and "max_steps: 2" in saved


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    import signal
    import time

    flags = [f for f in TINY_FLAGS if f != "--quiet"]
    i = flags.index("--max-steps")
    flags[i + 1] = "100000"
    proc = subprocess.Popen([sys.executable, "-m", "difforge", "train", "--runs-dir", str(tmp_path), "--run", "r",
                             "--builtin-per-class", "4", *flags], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    for line in proc.stderr:  # wait until the loop runs
        if line.startswith("train:") or time.time() > deadline:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err
    assert "resume with" in err and "Traceback" not in err
    res = cli("train", "--resume", tmp_path / "r", "--max-steps", "1", "--quiet")
    assert res.returncode == 0 and "resuming" in res.stderr, res.stderr
    assert (tmp_path / "r" / "checkpoints" / "state.safetensors").is_file()


def test_readme_alias_table_is_in_sync():
    from pathlib import Path

    from difforge.cli.aliases import alias_table_markdown

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert alias_table_markdown() in readme


def test_data_defects_on_three_materials_with_captions(tmp_path, capsys):
    import json

    from difforge.cli.main import main

    assert main(["data", "defects", str(tmp_path / "d"), "--size", "16", "--per-class", "6", "--seed", "2",
                 "--materials", "metal,wood,concrete", "--captions"]) == 0
    recs = [json.loads(line) for line in (tmp_path / "d" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["material"] for r in recs} == {"metal", "wood", "concrete"}
    assert all(r["text"].endswith("on concrete") == (r["material"] == "concrete") for r in recs)
    assert main(["data", "defects", str(tmp_path / "e"), "--materials", "metal,glass"]) == 2
    assert "--materials: materials must be distinct names of metal, wood, concrete" in capsys.readouterr().err
