"""Interpolation: slerp against its closed-form properties, seeds and images through the pipeline, the CLI."""


import numpy as np
import pytest
import torch
from PIL import Image

from difforge.diffusion.interpolation import lerp, mix_lambdas, slerp, timesteps_from
from difforge.diffusion.schedule import Schedule
from difforge.errors import UserError
from difforge.data.outputs import save_interpolation
from difforge.pipeline import Pipeline

from .clikit import cli, one_line_error


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    """Two built-in defect images of different classes, written larger than the model's 16 px."""
    from difforge.data.builtin import generate_arrays

    d = tmp_path_factory.mktemp("src")
    arr, _, _ = generate_arrays(size=24, per_class=1, seed=3)
    a, b = d / "a.png", d / "b.png"
    Image.fromarray(arr[0]).save(a)
    Image.fromarray(arr[2][:, 2:]).save(b)  # not square: center-cropped on load
    return a, b


# -- slerp ------------------------------------------------------------------------------------


def test_slerp_endpoints_symmetry_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, 16, generator=g), torch.randn(3, 16, 16, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    assert torch.allclose(slerp(a, b, 0.5), slerp(b, a, 0.5), atol=1e-6)
    assert torch.allclose(slerp(a, b, 0.3), slerp(b, a, 0.7), atol=1e-6)
    ua, ub = a / a.norm(), b / b.norm()
    for lam in torch.linspace(0, 1, 11).tolist():
        assert abs(float(slerp(ua, ub, lam).norm()) - 1.0) < 1e-6
    # raw Gaussian vectors keep a norm ~sqrt(d); the straight line loses ~1/sqrt(2) at the middle
    d = a.numel()
    assert abs(float(slerp(a, b, 0.5).norm()) / d**0.5 - 1.0) < 0.06
    assert float(lerp(a, b, 0.5).norm()) / d**0.5 < 0.8
    # the angle moves linearly: the middle is equally far (in angle) from both ends
    mid = slerp(ua, ub, 0.5)
    assert abs(float((mid * ua).sum()) - float((mid * ub).sum())) < 1e-6


def test_slerp_parallel_falls_back_to_lerp():
    a = torch.ones(8)
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)
    with pytest.raises(ValueError, match="one shape"):
        slerp(a, torch.ones(4), 0.5)


def test_mix_lambdas_and_partial_timesteps():
    assert mix_lambdas(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError):
        mix_lambdas(1)
    s = Schedule.named("linear", 1000)
    assert timesteps_from(s, 10, 3) == [10, 5, 0]
    assert timesteps_from(s, 4, 50) == [4, 3, 2, 1, 0]  # at most t + 1 steps
    assert timesteps_from(s, 7, None) == list(range(7, -1, -1))
    assert timesteps_from(s, 0, 5) == [0]
    for spacing in ("logsnr", "karras"):
        ts = timesteps_from(s, 300, 6, spacing)
        assert ts[0] == 300 and ts[-1] == 0 and len(ts) == 6
        assert all(x > y for x, y in zip(ts, ts[1:]))
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        timesteps_from(s, 1000, 5)


# -- pipeline ---------------------------------------------------------------------------------


def test_seed_interpolation_ends_are_the_seeds_samples(tiny_model, tmp_path):
    pipe = Pipeline.from_checkpoint(tiny_model)
    res = pipe.interpolate(seeds=(3, 8), class_label="crack", num_mix=3, steps=4)
    assert res.mode == "seeds" and res.sources is None and res.lambdas == [0.0, 0.5, 1.0]
    assert res.frames.shape == (3, 16, 16, 3) and res.frames.dtype == torch.uint8
    a = pipe.generate(num=1, class_label="crack", seeds=[3], steps=4).images[0]
    b = pipe.generate(num=1, class_label="crack", seeds=[8], steps=4).images[0]
    assert (res.frames[0].int() - a.int()).abs().max() <= 1
    assert (res.frames[-1].int() - b.int()).abs().max() <= 1
    assert (a.int() - b.int()).abs().max() > 5  # the ends do differ
    assert res.grid().shape == (16 + 4, 3 * 18 + 2, 3)
    written = save_interpolation(res, tmp_path, gif=True)
    assert len(written["images"]) == 3 and written["grid"].is_file() and written["gif"].is_file()


def test_image_interpolation_small_t_reproduces_the_sources(tiny_model, two_images):
    pipe = Pipeline.from_checkpoint(tiny_model)
    res = pipe.interpolate(images=two_images, t=5, num_mix=4, steps=3, sampler="ddim")
    assert res.mode == "images" and res.timesteps == [5.0, 3.0, 0.0]
    src = res.sources.float()
    assert res.sources.shape == (2, 16, 16, 3)
    frames = res.frames.float()
    mse = lambda x, y: float(((x - y) / 255.0).pow(2).mean())  # noqa: E731
    assert mse(frames[0], src[0]) < 2e-3 and mse(frames[-1], src[1]) < 2e-3
    assert mse(frames[0], src[1]) > 5 * mse(frames[0], src[0])
    mid = frames[1:-1]  # in between, closer to the linear mix than to either end
    assert mse(mid[0], src[0]) < mse(mid[0], src[1]) and mse(mid[1], src[1]) < mse(mid[1], src[0])
    grid = res.grid()
    assert grid.shape == (16 + 4, (4 + 2) * 18 + 2, 3)
    assert np.array_equal(grid[2:18, 2:18], res.sources[0].numpy())  # first column: source A
    assert np.array_equal(grid[2:18, -18:-2], res.sources[1].numpy())  # last column: source B


def test_interpolation_errors(tiny_model, two_images, tmp_path):
    pipe = Pipeline.from_checkpoint(tiny_model)
    with pytest.raises(UserError, match="does not exist"):
        pipe.interpolate(images=(two_images[0], tmp_path / "nope.png"), t=5)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read image"):
        pipe.interpolate(images=(two_images[0], tmp_path / "bad.png"), t=5)
    with pytest.raises(UserError, match=r"0\.\.999"):
        pipe.interpolate(images=two_images, t=1000)
    with pytest.raises(UserError, match=r"0\.\.999"):
        pipe.interpolate(images=two_images, t=-1)
    with pytest.raises(UserError, match="image interpolation"):
        pipe.interpolate(seeds=(0, 1), t=10)
    with pytest.raises(UserError, match="scratch, inclusion"):
        pipe.interpolate(seeds=(0, 1), class_label="dent")
    with pytest.raises(UserError, match="one class"):
        pipe.interpolate(seeds=(0, 1), class_label="all")
    with pytest.raises(UserError, match="num-mix"):
        pipe.interpolate(seeds=(0, 1), num_mix=1)
    with pytest.raises(UserError, match="plms does not take eta"):
        pipe.interpolate(seeds=(0, 1), sampler="plms", eta=0.5)


# -- CLI --------------------------------------------------------------------------------------


def test_cli_interpolate_images_writes_frames_grid_and_gif(tiny_model, two_images, tmp_path):
    out = tmp_path / "interp"
    res = cli("interpolate", tiny_model, "--images", *two_images, "--t", "20", "--steps", "3", "--num-mix", "3",
              "--class", "scratch", "--gif", "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["frame_00000.png", "frame_00001.png", "frame_00002.png", "interpolation.gif", "interpolation.png"]
    assert Image.open(out / "interpolation.png").size == ((3 + 2) * 18 + 2, 20)
    assert "class scratch" in res.stdout


def test_cli_interpolate_one_line_errors(tiny_model, two_images, tmp_path):
    one_line_error(cli("interpolate", tiny_model, "--images", two_images[0], tmp_path / "missing.png", "--out", tmp_path), "missing.png", "does not exist")
    one_line_error(cli("interpolate", tiny_model, "--images", *two_images, "--t", "5000", "--out", tmp_path), "--t", "0..999")
