"""Pipeline.inpaint and `difforge inpaint`: known pixels exact, masks, feathering, classes and CFG, errors."""


import numpy as np
import pytest
import torch
from PIL import Image

from difforge.data.folder import load_image
from difforge.errors import UserError
from difforge.pipeline import Pipeline

from .clikit import cli

SIZE = 8


class FakeNet(torch.nn.Module):
    """eps = 0.5 x_t + a per-class offset: enough to make fills differ by class and by guidance."""

    def __init__(self, classes: int = 0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.classes = classes

    def forward(self, x, t, y=None):
        out = 0.5 * x + self.w
        if y is not None:
            out = out + (y.float() - self.classes / 2).reshape(-1, 1, 1, 1) * 0.3
        return out


def fake_pipe(classes=()):
    meta = {
        "diffusion": {"noise_schedule": "linear", "diffusion_steps": 100, "target": "eps"},
        "data": {"image_size": SIZE, "channels": 3, "class_names": list(classes)},
        "network": {"name": "fake", "config": {}},
    }
    return Pipeline(FakeNet(len(classes)), meta, torch.device("cpu"))


def source():
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def box_mask():
    m = np.zeros((SIZE, SIZE), dtype=bool)
    m[2:5, 3:7] = True
    return m


@pytest.mark.parametrize("method,kw", [("repaint", dict(resample=3, jump=2)), ("blend", dict(sampler="ddim")),
                                       ("blend", dict(sampler="dpm++2m")), ("blend", dict(sampler="ddpm", steps=5))])
def test_outside_the_mask_bit_for_bit_inside_generated(method, kw):
    src, mask = source(), box_mask()
    out = fake_pipe().inpaint(src, mask, num=3, method=method, steps=kw.pop("steps", 6), **kw)
    imgs = out.images.numpy()
    assert imgs.shape == (3, SIZE, SIZE, 3) and imgs.dtype == np.uint8
    assert np.array_equal(out.mask.numpy(), mask) and np.array_equal(out.source.numpy(), src)
    assert (imgs[:, ~mask] == src[~mask]).all()
    assert (imgs[:, mask] != src[mask]).any()


def test_same_seed_same_images_whatever_the_batch_size():
    pipe, src, mask = fake_pipe(), source(), box_mask()
    a = pipe.inpaint(src, mask, num=3, steps=5, resample=2, jump=2, seed=4, batch_size=1).images
    b = pipe.inpaint(src, mask, num=3, steps=5, resample=2, jump=2, seed=4, batch_size=3).images
    c = pipe.inpaint(src, mask, num=3, steps=5, resample=2, jump=2, seed=5).images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_feathering_regenerates_a_band_and_keeps_the_rest():
    src, mask = source(), box_mask()
    out = fake_pipe().inpaint(src, mask, num=2, method="blend", steps=4, feather=1)
    grown = np.zeros_like(mask)
    grown[1:6, 2:8] = True
    assert np.array_equal(out.mask.numpy(), grown)
    assert torch.equal(out.alpha[torch.from_numpy(mask)], torch.ones(int(mask.sum())))
    assert torch.allclose(out.alpha[torch.from_numpy(grown & ~mask)], torch.tensor(0.5))
    imgs = out.images.numpy()
    assert (imgs[:, ~grown] == src[~grown]).all() and (imgs[:, grown & ~mask] != src[grown & ~mask]).any()


def test_conditional_model_classes_and_cfg():
    pipe, src, mask = fake_pipe(("dent", "scratch")), source(), box_mask()
    a = pipe.inpaint(src, mask, num=2, class_label="dent", method="blend", steps=4, cfg=3.0)
    b = pipe.inpaint(src, mask, num=2, class_label="scratch", method="blend", steps=4, cfg=3.0)
    c = pipe.inpaint(src, mask, num=2, class_label="scratch", method="blend", steps=4, cfg=1.0)
    assert a.labels.tolist() == [0, 0] and b.labels.tolist() == [1, 1] and a.class_names == ["dent", "scratch"]
    assert not torch.equal(a.images, b.images) and not torch.equal(b.images, c.images)
    for out in (a, b, c):
        assert (out.images.numpy()[:, ~mask] == src[~mask]).all()
    both = pipe.inpaint(src, mask, num=1, class_label="all", steps=4, resample=2, jump=1)
    assert both.labels.tolist() == [0, 1]


def test_errors_are_one_clear_line(tmp_path):
    pipe, src, mask = fake_pipe(), source(), box_mask()
    with pytest.raises(UserError, match="empty"):
        pipe.inpaint(src, np.zeros_like(mask))
    with pytest.raises(UserError, match=r"\(8, 8\)"):
        pipe.inpaint(src, np.ones((4, 4), dtype=bool))
    with pytest.raises(UserError, match="DDPM steps.*blend"):
        pipe.inpaint(src, mask, sampler="ddim")
    with pytest.raises(UserError, match="method"):
        pipe.inpaint(src, mask, method="paint")
    with pytest.raises(UserError, match="resample"):
        pipe.inpaint(src, mask, resample=0)
    with pytest.raises(UserError, match="not binary"):
        pipe.inpaint(src, np.full((SIZE, SIZE), 128, dtype=np.uint8))
    with pytest.raises(UserError, match="unconditional"):
        pipe.inpaint(src, mask, class_label="dent")
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((12, 10, 3), dtype=np.uint8)).save(img)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(UserError, match=r"m\.png is 10x10 pixels but its image .*img\.png is 10x12"):
        pipe.inpaint(str(img), str(tmp_path / "m.png"))


# ----------------------------------------------------------------------------- a trained model, the CLI


@pytest.fixture
def files(tmp_path):
    from difforge.data.builtin import make_image_and_mask

    img, mask, _ = make_image_and_mask(0, 32, np.random.default_rng(1))
    Image.fromarray(img).save(tmp_path / "scratch.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    return tmp_path / "scratch.png", tmp_path / "mask.png"


def test_cli_inpaint_writes_images_and_the_mask_used(tiny_model, files, tmp_path):
    img, mask = files
    out = tmp_path / "out"
    res = cli("inpaint", tiny_model, "--image", img, "--mask", mask, "--class", "crack", "--num", "2", "--steps", "4",
              "--resample", "2", "--jump", "2", "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "2 inpainted images" in res.stdout
    used = np.asarray(Image.open(out / "mask.png")) > 127
    src = load_image(img, 16, 3)
    for f in sorted(out.glob("crack_*.png")):
        arr = np.asarray(Image.open(f))
        assert arr.shape == (16, 16, 3) and (arr[~used] == src[~used]).all()
    assert len(list(out.glob("crack_*.png"))) == 2 and (out / "inpaint.png").is_file()
    assert used.any() and not used.all()

    res = cli("inpaint", tiny_model, "--image", img, "--mask", mask, "--sampler", "ddim", "--out", out)
    assert res.returncode == 2 and "blend" in res.stderr and "Traceback" not in res.stderr


def test_pipeline_inpaint_with_a_trained_model_from_files(tiny_model, files):
    pipe = Pipeline.from_checkpoint(tiny_model)
    img, mask = files
    out = pipe.inpaint(str(img), str(mask), num=2, class_label="scratch", method="blend", sampler="dpm++2m", steps=4, cfg=2.0)
    src = load_image(img, 16, 3)
    keep = ~out.mask.numpy()
    assert (out.images.numpy()[:, keep] == src[keep]).all()


class HalfCodec:
    """A stand-in VAE: latents are the 2x2-averaged pixels."""

    def latent_shape(self, size):
        return (3, size // 2, size // 2)

    def encode(self, x):
        return torch.nn.functional.avg_pool2d(x, 2)

    def decode(self, z):
        return torch.nn.functional.interpolate(z, scale_factor=2).clamp(-1, 1)


def test_latent_model_regenerates_latents_under_the_mask_and_pastes_pixels():
    pipe = fake_pipe()
    pipe.codec = HalfCodec()
    src, mask = source(), box_mask()
    out = pipe.inpaint(src, mask, num=2, method="blend", steps=4)
    imgs = out.images.numpy()
    assert (imgs[:, ~mask] == src[~mask]).all() and (imgs[:, mask] != src[mask]).any()


class MaskConditionedFake(torch.nn.Module):
    """7 input channels (x_t, mask, masked image) -> 7 outputs; records what it saw."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(x.detach().clone())
        return torch.cat([0.5 * x[:, :3] + x[:, 3:4], x[:, 3:]], 1) + self.w


def test_mask_conditioned_model_sees_mask_and_masked_image_and_sample_refuses():
    pipe = fake_pipe(("dent", "scratch"))
    pipe.net = MaskConditionedFake()
    pipe.meta = dict(pipe.meta, inputs={"mask_conditioning": {"extra_channels": "C + 1"}})
    src, mask = source(), box_mask()
    with pytest.raises(UserError, match="mask-conditioned.*difforge inpaint"):
        pipe.generate(num=1, steps=2)
    out = pipe.inpaint(src, mask, num=2, class_label="dent", steps=3, cfg=2.0, cfg_interval=None)  # guided at every step
    assert out.method == "blend" and (out.images.numpy()[:, ~mask] == src[~mask]).all()
    seen = pipe.net.seen[0]
    assert seen.shape == (4, 7, SIZE, SIZE)  # CFG: cond + uncond in one batch
    m = torch.from_numpy(mask).float()
    known = torch.from_numpy(src).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(seen[:, 3], m.expand(4, -1, -1))
    assert torch.allclose(seen[:, 4:], (known * (1 - m)).expand(4, -1, -1, -1))
