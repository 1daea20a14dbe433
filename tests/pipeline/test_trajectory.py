"""Denoising-progress pictures, sampler/option errors, the evaluator's view of --npz, the sampler benchmark."""

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from difforge.diffusion.schedule import Schedule
from difforge.diffusion.timesteps import sampling_timesteps
from difforge.errors import UserError
from difforge.data.outputs import save_trajectory
from difforge.pipeline import Pipeline, check_sampler_options, sampler_options, trajectory_steps

from .clikit import cli, one_line_error


# -- which steps to show ----------------------------------------------------------------------


@pytest.mark.parametrize("schedule,spacing,steps", [("linear", "uniform", 50), ("linear", "logsnr", 50), ("cosine", "uniform", 1000), ("linear", "karras", 20)])
def test_trajectory_steps_strictly_increasing_with_both_ends(schedule, spacing, steps):
    s = Schedule.named(schedule, 1000)
    ts = sampling_timesteps(1000, steps, spacing, schedule=s)
    for frames in (2, 5, 10):
        picks = trajectory_steps(s, ts, frames)
        assert len(picks) == frames and picks[0] == 0 and picks[-1] == len(ts) - 1
        assert all(a < b for a, b in zip(picks, picks[1:]))


def test_trajectory_steps_coarse_to_fine_on_the_linear_schedule():
    s = Schedule.named("linear", 1000)
    ts = sampling_timesteps(1000, 50, "uniform", schedule=s)
    picks = trajectory_steps(s, ts, 10)
    gaps = [b - a for a, b in zip(picks, picks[1:])]
    assert gaps[0] >= 3 * max(gaps[-3:])  # the long all-noise start is skipped quickly ...
    assert picks[1] >= 10 and max(gaps[1:]) <= 8  # ... the rest is shown at a fine pace
    assert trajectory_steps(s, ts[:4], 10) == [0, 1, 2, 3]  # fewer steps than frames: all of them
    assert trajectory_steps(s, ts, 1) == [len(ts) - 1]


# -- the pipeline -----------------------------------------------------------------------------


def test_trajectory_grid_frames_and_final_images(tiny_model, tmp_path):
    pipe = Pipeline.from_checkpoint(tiny_model)
    tr = pipe.trajectory(num=2, class_label="inclusion", frames=4, steps=6, seed=5)
    assert tr.xt.shape == (4, 2, 16, 16, 3) and tr.x0.shape == (4, 2, 16, 16, 3) and tr.xt.dtype == torch.uint8
    assert len(tr.steps) == 4 and tr.steps[0] == 0 and tr.steps[-1] == 5
    assert all(a < b for a, b in zip(tr.steps, tr.steps[1:]))
    assert tr.timesteps[0] == 999.0 and tr.timesteps[-1] == 0.0
    grid = tr.grid()
    assert grid.shape == (2 * 2 * 18 + 2, 4 * 18 + 2, 3)  # rows: x_t, x0 of image 0, then of image 1
    assert np.array_equal(grid[2:18, 2:18], tr.xt[0, 0].numpy())
    assert np.array_equal(grid[20:36, 2:18], tr.x0[0, 0].numpy())
    assert np.array_equal(grid[38:54, -18:-2], tr.xt[-1, 1].numpy())
    same = pipe.generate(num=2, class_label="inclusion", steps=6, seed=5)
    assert (tr.final.images.int() - same.images.int()).abs().max() <= 1
    assert torch.equal(tr.xt[-1], tr.final.images)  # the last frame is the finished sample
    written = save_trajectory(tr, tmp_path, gif=True)
    assert Image.open(written["grid"]).size == (4 * 18 + 2, 4 * 18 + 2)
    gif = Image.open(written["gif"])
    assert gif.n_frames >= 4 and gif.size == (2 * 18 + 2, 2 * 18 + 2)


def test_sampler_option_mismatch_is_one_clear_user_error(tiny_model):
    assert sampler_options("ddim") == {"eta": 0.0}
    assert sampler_options("plms") == {}
    assert "variance" in sampler_options("ddpm")
    with pytest.raises(UserError, match=r"plms does not take eta \(--eta\); it takes no options"):
        check_sampler_options("plms", {"eta": 0.5})
    with pytest.raises(UserError, match="dpm\\+\\+2m-sde does not take variance.*it takes eta"):
        check_sampler_options("dpm++2m-sde", {"variance": "learned"})
    with pytest.raises(UserError, match="unknown sampler"):
        check_sampler_options("nope", {})
    pipe = Pipeline.from_checkpoint(tiny_model)
    with pytest.raises(UserError, match="euler does not take eta.*s_churn"):
        pipe.generate(num=1, class_label=0, sampler="euler", steps=2, eta=0.5)
    with pytest.raises(UserError, match="learn_sigma"):
        pipe.generate(num=1, class_label=0, sampler="ddpm", steps=2, variance="learned")
    with pytest.raises(UserError, match="unknown variance"):
        pipe.generate(num=1, class_label=0, sampler="ddpm", steps=2, variance="huge")
    with pytest.raises(UserError, match="eta must be in"):
        pipe.trajectory(num=1, class_label=0, sampler="ddim", steps=2, eta=2.0)
    assert pipe.generate(num=1, class_label=0, sampler="ddpm", steps=2, variance="fixed_large").images.shape == (1, 16, 16, 3)


# -- the CLI ----------------------------------------------------------------------------------


def _read_like_the_evaluator(path):
    """guided-diffusion's evaluator: ``np.load(path)["arr_0"]``, or the arr_0.npy member read in place."""
    images = np.load(path)["arr_0"]
    with zipfile.ZipFile(path) as z, z.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
    assert not fortran and dtype == np.uint8 and tuple(shape) == images.shape
    return images


def test_cli_sample_trajectory_gif_and_npz_per_class(tiny_model, tmp_path):
    out = tmp_path / "s"
    res = cli("sample", tiny_model, "--num", "1", "--class", "all", "--steps", "5", "--trajectory",
              "--trajectory-frames", "3", "--gif", "--npz", "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "s-trajectory.png").size == (3 * 18 + 2, 2 * 4 * 18 + 2)  # beside the sample folder
    assert Image.open(tmp_path / "s-trajectory.gif").n_frames >= 3
    assert not list(out.glob("trajectory*"))
    images = _read_like_the_evaluator(out / "samples_4x16x16x3.npz")
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    assert np.load(out / "samples_4x16x16x3.npz")["arr_1"].tolist() == [0, 1, 2, 3]
    assert np.array_equal(images[2], np.asarray(Image.open(out / "crack_00002.png")))


def test_cli_sample_option_errors_are_one_line(tiny_model, tmp_path):
    one_line_error(cli("sample", tiny_model, "--sampler", "plms", "--eta", "0.5", "--steps", "2", "--out", tmp_path), "plms", "--eta", "no options")
    one_line_error(cli("sample", tiny_model, "--sampler", "ddpm", "--variance", "learned", "--steps", "2", "--out", tmp_path), "learn_sigma", "fixed_small")


# -- the sampler benchmark on a trained model (two small settings, never the 1000-step grid) --


def test_sampler_benchmark_on_the_trained_model(tiny_model, capsys):
    from benchmarks import samplers as bench

    bench.main(["--model", str(tiny_model), "--samplers", "ddim,dpm++2m", "--steps-list", "2,3", "--num", "3"])
    out = capsys.readouterr().out
    assert "FD" in out and "data" in out and "ddim" in out and "dpm++2m" in out
    assert "no ddpm 1000-step row" in out  # the reference setting was left out, and it says so
