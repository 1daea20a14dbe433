"""train-sr --val (IDDM's --val_dataset_path): held-out PSNR / SSIM in metrics.csv and the model file."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from difforge.cli.main import build_parser
from difforge.errors import ConfigError
from difforge.modelfile import read_metadata
from difforge.train.trainer import Trainer

from ..conftest import tiny_overrides


def _blocks(folder, n, seed, classes=None):
    """Images constant on 4x4 blocks: area down-sampling by 4 loses nothing, nearest up-sampling undoes it."""
    rs = np.random.RandomState(seed)
    for i in range(n):
        sub = folder / classes[i % len(classes)] if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rs.randint(0, 256, (4, 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)).save(sub / f"{i}.png")


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("val_psnr")]


def _bicubic_psnr_by_hand(folder, n):
    """Reference: the mean PSNR of bicubic up-sampling of 4x4-block means (area down), in numpy + Pillow."""
    out = []
    for i in range(n):
        hr = np.asarray(Image.open(folder / f"{i}.png"), dtype=np.float64) / 127.5 - 1
        low = hr.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3))
        up = torch.nn.functional.interpolate(torch.from_numpy(low).permute(2, 0, 1)[None], scale_factor=4, mode="bicubic",
                                             align_corners=False).clamp(-1, 1)[0].permute(1, 2, 0).numpy()
        mse = (((up + 1) / 2 - (hr + 1) / 2) ** 2).mean()
        out.append(10 * np.log10(1 / mse))
    return float(np.mean(out))


def test_regression_run_scores_the_validation_folder_and_beats_bicubic(tmp_path):
    _blocks(tmp_path / "data", 64, seed=0)
    _blocks(tmp_path / "val", 12, seed=1)
    r = Trainer(progress=False, data=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"), run="v", task="sr-regression",
                sr_objective="regression", image_size=16, scale=4, sr_down="area", loss="mse", batch_size=16, lr=3e-3, max_steps=200,
                network_options=dict(channels=16, blocks=1, layers=2, growth=8), checkpoint_every=10000, preview_num=2,
                precision="fp32", ema_decay=0.9, sr_val_data=str(tmp_path / "val"), eval_every=100).fit()
    rows = _rows(r.run_dir)
    assert [int(x["step"]) for x in rows] == [100, 200]
    bicubic = _bicubic_psnr_by_hand(tmp_path / "val", 12)
    assert float(rows[-1]["val_bicubic_psnr"]) == pytest.approx(bicubic, abs=0.05)
    assert float(rows[-1]["val_psnr"]) > bicubic + 1.0  # block data: the trained upscaler beats bicubic clearly
    meta = read_metadata(r.model_file)
    assert meta["sr_val"]["step"] == 200 and meta["sr_val"]["val_psnr"] == pytest.approx(float(rows[-1]["val_psnr"]))
    assert "validation at step 200" in (r.run_dir / "log.txt").read_text()


def test_diffusion_upsampler_validates_per_class_and_refuses_unknown_classes(tmp_path):
    _blocks(tmp_path / "data", 16, seed=0, classes=["a", "b"])
    _blocks(tmp_path / "val", 4, seed=1, classes=["b"])
    over = dict(data=str(tmp_path / "data"), task="sr", scale=4, sr_down="area", max_steps=2, eval_every=2, preview_steps=2)
    r = Trainer(progress=False, **tiny_overrides(tmp_path, sr_val_data=str(tmp_path / "val"), **over)).fit()
    row = _rows(r.run_dir)[-1]
    assert 0 < float(row["val_psnr"]) < 100 and np.isfinite(float(row["val_ssim"]))
    _blocks(tmp_path / "val2", 2, seed=2, classes=["b", "c"])
    with pytest.raises(ConfigError, match="validation classes c"):
        Trainer(progress=False, **tiny_overrides(tmp_path, run="bad", sr_val_data=str(tmp_path / "val2"), **over)).fit()


def test_iddm_val_dataset_path_flag():
    args = build_parser().parse_args(["train-sr", "--val_dataset_path", "some/dir", "--objective", "regression"])
    assert args.sr_val_data == "some/dir"
