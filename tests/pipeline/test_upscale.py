"""Super-resolution end to end on tiny models: training both kinds, any input size, noise levels, the cascade."""

import numpy as np
import pytest
import torch

from difforge.data.degrade import degrade, upsample
from difforge.diffusion.superres import RESIDUAL_STD, LowResConditionedNet, ResidualCodec, level_features, residual_scale
from difforge.errors import UserError
from difforge.modelfile import read_metadata
from difforge.pipeline import Pipeline, SampleConfig
from difforge.pipeline.upscale import Upscaler, consistency
from difforge.train.trainer import Trainer


def test_model_files_describe_the_task(sr_models):
    d, r = read_metadata(sr_models["diffusion"]), read_metadata(sr_models["regression"])
    assert d["kind"] == "diffusion" and d["inputs"]["low_res"]["scale"] == 2
    assert d["network"]["config"]["in_channels"] == 6 and d["network"]["config"]["aug_dim"] == 2  # the level is a network input
    assert d["inputs"]["low_res"]["noise_aug"]["max"] == 0.5
    assert r["kind"] == "upscaler" and r["network"]["name"] == "rdn-sr" and r["inputs"]["low_res"]["degradation"]["scale"] == 4
    with pytest.raises(UserError, match="super-resolution model"):
        Pipeline.from_checkpoint(sr_models["diffusion"]).generate(2, steps=2)


def test_the_sr_loss_sees_the_low_res_image(sr_models):
    """The task's loss changes when only the conditioning changes (the extra channels reach the network)."""
    from difforge.config import Config
    from difforge.train.batches import Batch
    from difforge.train.rng import StepRNG
    from difforge.train.tasks.superres import SuperResTask

    up = Upscaler.from_checkpoint(sr_models["diffusion"], pipeline_cls=Pipeline)
    task = SuperResTask(Config().override(task="sr", scale=2, noise_aug=0.5, image_size=16), None)
    task.deg, task.noise_aug = up.degradation, 0.5
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    low, aug, base = task.conditioning(x, StepRNG.for_step(0, 0, 4))
    assert low.shape == x.shape and aug.shape == (4, 2)
    assert torch.equal(base, upsample(degrade(x, up.degradation), 2))  # a residual's base: the un-noised low-res image
    net = up.net
    t = torch.full((4,), 500)
    a = LowResConditionedNet(net, low, aug)(x, t)
    b = LowResConditionedNet(net, -low, aug)(x, t)
    c = LowResConditionedNet(net, low, aug * 0)(x, t)
    assert a.shape == x.shape and not torch.allclose(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("kind", ["regression", "diffusion"])
@pytest.mark.parametrize("h,w", [(130, 130), (77, 203)])
def test_any_size_comes_out_at_exactly_scale(sr_models, kind, h, w):
    up = Upscaler.from_checkpoint(sr_models[kind], pipeline_cls=Pipeline)
    img = np.random.RandomState(h).randint(0, 256, (h, w, 3), dtype=np.uint8)
    opts = dict(tile=32, overlap=4, steps=1, tile_batch=64) if kind == "diffusion" else {}
    out = up.upscale([img], **opts)[0]
    assert out.shape == (up.scale * h, up.scale * w, 3) and out.dtype == np.uint8


def test_zero_level_equals_the_plain_path(sr_models):
    """noise_level 0 (zero features, un-noised input) == the network with no level input at all;
    another level changes the result, so the level is an input."""
    up = Upscaler.from_checkpoint(sr_models["diffusion"], pipeline_cls=Pipeline)
    torch.manual_seed(1)
    torch.nn.init.normal_(up.net.aug_embed.weight, std=1.0)  # trained 4 steps it is near its zero init: make it matter
    low = torch.rand(1, 3, 8, 8) * 2 - 1
    config = SampleConfig(cfg=1.0, steps=3)
    ours = up.upscale_tensor(low, 1, seed=5, config=config, noise_level=0.0)
    pipe = up.pipe
    codec = ResidualCodec(upsample(low, 2), up.residual)  # the default upsampler diffuses the scaled residual
    plain = Pipeline(LowResConditionedNet(pipe.net, upsample(low, 2), None), pipe.meta, pipe.device, pipe.precision, codec=codec)
    ref = plain.sample_batches([5], torch.tensor([1]), config, {})
    assert torch.equal(ours, ref)
    noised = up.upscale_tensor(low, 1, seed=5, config=config, noise_level=0.3)
    assert not torch.allclose(noised, ours, atol=1e-3)
    assert torch.equal(noised, up.upscale_tensor(low, 1, seed=5, config=config, noise_level=0.3))  # deterministic per seed
    assert torch.equal(level_features(torch.zeros(3)), torch.zeros(3, 2))


def test_a_residual_upsampler_that_predicts_no_residual_gives_bicubic(sr_models):
    """The default upsampler diffuses r = k (x - bicubic(z)): a network whose x0 (= r) prediction is zero
    samples r = 0 (DDIM ends at x0) and the output is exactly the bicubic up-sampling, at any size."""
    meta = read_metadata(sr_models["diffusion"])
    k = meta["inputs"]["low_res"]["residual"]["scale"]
    up = Upscaler.from_checkpoint(sr_models["diffusion"], pipeline_cls=Pipeline)
    assert up.residual == k and 1.0 <= k <= 64.0
    up.pipe.meta = dict(up.pipe.meta, diffusion=dict(up.pipe.meta["diffusion"], target="x0"))
    with torch.no_grad():
        for p in up.net.out.parameters():
            p.zero_()
    low = torch.rand(1, 3, 8, 8) * 2 - 1  # one tile: a tile's bicubic base is the whole image's
    out = up.upscale_tensor(low, 1, seed=3, config=SampleConfig(cfg=1.0, steps=4, sampler="ddim"))
    assert torch.allclose(out, upsample(low, 2), atol=1e-6)
    up.residual = None  # the same network read as a plain upsampler gives x = 0 instead: the residual path is what made it bicubic
    assert upsample(low, 2).abs().mean() > 0.3 > up.upscale_tensor(low, 1, seed=3, config=SampleConfig(cfg=1.0, steps=4, sampler="ddim")).abs().max()


@pytest.mark.parametrize("bad", ["2", 0.5, True, None])
def test_a_bad_residual_scale_in_a_file_is_named(sr_models, tmp_path, bad):
    from difforge.errors import CheckpointError
    from difforge.modelfile import load_model_file, save_model_file

    tensors, meta = load_model_file(sr_models["diffusion"])
    meta["inputs"]["low_res"]["residual"] = {"scale": bad}
    save_model_file(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="inputs.low_res.residual.scale"):
        Upscaler.from_checkpoint(tmp_path / "bad.safetensors", pipeline_cls=Pipeline)


def test_residual_scale_brings_the_residual_to_image_spread():
    torch.manual_seed(0)
    base = torch.rand(8, 3, 16, 16) * 2 - 1
    for std in (0.02, 0.1, 0.4):
        high = base + std * torch.randn_like(base)
        assert residual_scale(high, base) == pytest.approx(RESIDUAL_STD / std, rel=0.02)
    assert residual_scale(base, base) == 64.0 and residual_scale(base + 3 * torch.randn_like(base), base) == 1.0  # clamped to [1, 64]
    codec = ResidualCodec(base, 5.0)
    x = (base + 0.1 * torch.randn_like(base)).clamp(-1, 1)
    assert torch.allclose(codec.decode(codec.encode(x)), x, atol=1e-6)


def test_noise_level_needs_a_model_trained_for_it(sr_models):
    up = Upscaler.from_checkpoint(sr_models["regression"])
    with pytest.raises(UserError, match="without noise augmentation"):
        up.upscale_tensor(torch.zeros(1, 3, 8, 8), noise_level=0.2)


def test_ideal_upscaler_is_consistent():
    """Block-constant images with area down-sampling: nearest up-sampling is the exact inverse, so
    through the whole tiled path the consistency PSNR is bounded only by 8-bit rounding: every value
    is off by <= 0.5 / 255, i.e. PSNR >= 20 log10(255 / 0.5) = 54.2 dB."""
    from difforge.data.io import to_uint8

    meta = {"kind": "upscaler", "network": {"name": "rdn-sr", "config": {}}, "inputs": {"low_res": {"scale": 4, "degradation": {"scale": 4, "down": "area"}}},
            "data": {"image_size": 16, "channels": 3, "class_names": []}}
    up = Upscaler(torch.nn.Upsample(scale_factor=4, mode="nearest"), meta, torch.device("cpu"))
    low = torch.from_numpy(np.random.RandomState(0).randint(0, 256, (1, 3, 37, 50)).astype(np.float32)).div(127.5).sub(1)
    out = up.upscale_tensor(low, tile=16, overlap=4)
    back = to_uint8(out).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    assert consistency(low, back, up.degradation).item() >= 54.1
    wrong = torch.nn.functional.interpolate(low, scale_factor=4, mode="bilinear")
    assert consistency(low, wrong, up.degradation).item() < 40  # a smoothing upscaler is not consistent: the check can fail


def test_cascade_refuses_a_mismatched_pair(sr_models, tiny_model):
    with pytest.raises(UserError, match=r"cannot cascade: .* makes 16 px images but .* trained on 8 px"):
        Pipeline.from_checkpoint(tiny_model).generate(2, upscale=sr_models["diffusion"], steps=2)
    base = Pipeline.from_checkpoint(sr_models["base"])
    up = Upscaler.from_checkpoint(sr_models["diffusion"], pipeline_cls=Pipeline)
    up.class_names = ["a", "b"]
    with pytest.raises(UserError, match="does not know the base model's classes"):
        base.generate(2, upscale=up, steps=2)


def test_cascade_generates_then_upscales_with_the_class(sr_models):
    base = Pipeline.from_checkpoint(sr_models["base"])
    out = base.generate(2, class_label="crack", upscale=sr_models["diffusion"], steps=2, seed=3)
    small = base.generate(2, class_label="crack", steps=2, seed=3)
    assert out.images.shape == (2, 16, 16, 3) and out.class_names == small.class_names
    assert torch.equal(out.labels, small.labels)


@pytest.mark.slow
def test_short_regression_run_is_consistent(tmp_path):
    """A regression upscaler trained briefly on a trivially easy set (4 px random images shown at 16 px
    block-constant, area degradation). For area down-sampling, ||D e||^2 <= ||e||^2 / N_low... per pixel
    by Jensen (each low-res value is the mean of s^2 errors), so consistency PSNR >= SR PSNR: the bound is checked,
    and the issue's 35 dB target with it."""
    from PIL import Image

    rs = np.random.RandomState(0)
    (tmp_path / "data").mkdir()
    for i in range(64):
        Image.fromarray(rs.randint(0, 256, (4, 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)).save(tmp_path / "data" / f"{i}.png")
    r = Trainer(progress=False, data=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"), run="c", task="sr-regression",
                sr_objective="regression", image_size=16, scale=4, sr_down="area", loss="mse", batch_size=16, lr=3e-3, max_steps=300,
                network_options=dict(channels=16, blocks=1, layers=2, growth=8), checkpoint_every=10000, preview_num=2,
                precision="fp32", ema_decay=0.9, ema_extra=[]).fit()
    from difforge.metrics.image_quality import psnr

    up = Upscaler.from_checkpoint(r.model_file)
    low = torch.from_numpy(np.random.RandomState(1).randint(0, 256, (8, 3, 4, 4)).astype(np.float32)).div(127.5).sub(1)
    hr = low.repeat_interleave(4, 2).repeat_interleave(4, 3)
    out = torch.cat([up.upscale_tensor(low[i : i + 1]) for i in range(8)])
    sr_psnr = psnr((out + 1) / 2, (hr + 1) / 2)
    cons = consistency(low, out, up.degradation)
    assert (cons >= sr_psnr - 1e-6).all()
    assert cons.mean() >= 35.0


def test_info_describes_a_regression_upscaler(sr_models):
    from difforge.cli.info import _describe_file

    d = _describe_file(sr_models["regression"])
    assert d["kind"] == "upscaler" and d["scale"] == 4 and d["network"] == "rdn-sr" and d["nonfinite_weights"] == "none"


def test_a_64px_diffusion_upsampler_folds_2x2_and_upscales_any_size(tmp_path):
    """From 64 px the sr task's UNet folds 2 x 2 pixels (x_t and the up-sampled image: 4 x 6 channels
    fit 32); the folded model upscales tiles and a size that is not a tile multiple."""
    from tests.conftest import TINY_NET, tiny_overrides

    run = Trainer(progress=False, **tiny_overrides(tmp_path, run="srp", task="sr", scale=4, image_size=64, max_steps=1,
                                                   network_options={**TINY_NET, "base_channels": 32})).fit()
    assert read_metadata(run.model_file)["network"]["config"]["patch_size"] == 2
    up = Upscaler.from_checkpoint(run.model_file, pipeline_cls=Pipeline)
    img = np.random.RandomState(0).randint(0, 256, (20, 27, 3), dtype=np.uint8)
    out = up.upscale([img], tile=16, overlap=4, steps=1)[0]
    assert out.shape == (80, 108, 3)
