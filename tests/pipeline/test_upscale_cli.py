"""`difforge train-sr`, `difforge upscale` and `difforge sample --upscale` from the command line."""

import csv

import numpy as np
from PIL import Image

from tests.pipeline.clikit import cli, one_line_error


def test_train_sr_regression_with_iddm_flags_then_upscale_with_reference(tmp_path):
    res = cli("train-sr", "--network", "srv1", "--image_size", "16", "--iterations", "2", "--run_name", "r", "--result_path", tmp_path,
              "--builtin-per-class", "4", "--batch_size", "4", "--network-option", "channels=8", "--network-option", "blocks=1",
              "--checkpoint-every", "100", "--preview-num", "2", "--quiet", "--quick_eval")
    assert res.returncode == 0, res.stderr
    model = tmp_path / "r" / "checkpoints" / "ema.safetensors"
    assert f"difforge upscale {model}" in res.stdout
    rs = np.random.RandomState(0)
    (tmp_path / "in").mkdir()
    (tmp_path / "ref").mkdir()
    hi = rs.randint(0, 256, (28, 20, 3), dtype=np.uint8)
    Image.fromarray(hi).save(tmp_path / "ref" / "a.png")
    Image.fromarray(hi).resize((5, 7), Image.BICUBIC).save(tmp_path / "in" / "a.png")
    res = cli("upscale", model, "--input", tmp_path / "in", "--out", tmp_path / "out", "--reference", tmp_path / "ref", "--quiet")
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "out" / "a.png").size == (20, 28)
    row = next(csv.DictReader(open(tmp_path / "out" / "upscale_metrics.csv")))
    assert 0 < float(row["psnr"]) < 100 and "consistency_psnr" in row and "PSNR" in res.stdout


def test_sample_upscale_mismatch_is_one_line(sr_models, tiny_model):
    one_line_error(cli("sample", tiny_model, "--upscale", sr_models["diffusion"], "--num", "1", "--steps", "2"), "cannot cascade", "px")


def test_sample_upscale_cascade(sr_models, tmp_path):
    res = cli("sample", sr_models["base"], "--upscale", sr_models["diffusion"], "--num", "2", "--steps", "2", "--upscale-steps", "2",
              "--out", tmp_path / "s", "--quiet", "--noise-level", "0.2")
    assert res.returncode == 0, res.stderr
    files = sorted((tmp_path / "s").glob("*.png"))
    assert len(files) == 2 and all(Image.open(f).size == (16, 16) for f in files)
