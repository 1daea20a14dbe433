"""``cascade_scale: auto``: the share of an image a small copy loses, against closed forms, and the factor it picks
for shapes (the built-in glyphs: x4) and textures (the built-in defects: x2)."""

import math

import numpy as np
import pytest
import torch

from difforge.config import Config
from difforge.data.glyphs import write_glyphs
from difforge.train import cascade, cascade_scale
from difforge.train.cascade_scale import DETAIL_LIMIT, choose_scale, detail_share, probe_images


def _grey(array) -> torch.Tensor:
    a = torch.as_tensor(np.clip(np.rint(array), 0, 255).astype(np.uint8))
    return a.reshape(-1, 1, *a.shape[-2:])


def test_a_finest_scale_checkerboard_is_lost_whole_and_a_slow_wave_kept():
    i, j = np.mgrid[0:64, 0:64]
    checker = _grey(128 + 60 * (-1.0) ** (i + j))  # all its variance at the finest scale: a small copy is flat grey
    wave = _grey(128 + 100 * np.sin(2 * np.pi * j / 64))  # one period across: a 16 px copy holds it
    assert detail_share(checker, 4).item() > 0.99
    assert detail_share(wave, 4).item() < 0.01


def test_white_noise_keeps_about_one_sixteenth_at_a_quarter_size():
    noise = _grey(np.random.default_rng(0).uniform(0, 255, (16, 64, 64)))
    share = detail_share(noise, 4)
    assert share.shape == (16,) and 0.85 < float(share.mean()) < 0.99  # 16 px keeps at most 1/16 of white noise's variance
    assert float(detail_share(noise, 2).mean()) < float(share.mean())  # a half-size copy keeps more


def test_the_share_follows_a_second_computation_by_hand():
    """Reference: the same round trip written with numpy on a random smooth-plus-edge image."""
    rng = np.random.default_rng(1)
    image = np.where(np.mgrid[0:32, 0:32][1] > 13, 200.0, 40.0) + rng.normal(0, 5, (32, 32))
    x = _grey(image)
    small = torch.nn.functional.interpolate(x.float(), size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    back = torch.nn.functional.interpolate(small, size=(32, 32), mode="bicubic", align_corners=False).numpy()[0, 0]
    grey = x.numpy()[0, 0].astype(np.float64)
    expected = ((grey - back) ** 2).mean() / grey.var()
    assert detail_share(x, 4).item() == pytest.approx(expected, rel=1e-4)


def test_a_flat_image_has_no_share():
    share = detail_share(_grey(np.full((2, 32, 32), 90.0)), 4)
    assert torch.isnan(share).all()
    assert detail_share(torch.full((1, 3, 32, 32), 90, dtype=torch.uint8), 2).isnan().item()


@pytest.fixture(scope="module")
def glyph_folder(tmp_path_factory):
    return write_glyphs(tmp_path_factory.mktemp("glyphs"), size=64, per_class=3, seed=0, progress=False)


def test_glyphs_get_the_x4_cascade_with_noise_augmentation(glyph_folder):
    scale, why = choose_scale(Config().override(data=str(glyph_folder), image_size=64))
    assert scale == 4 and "16 px copy keeps" in why and "(median of 30 images)" in why
    config = Config().override(data=str(glyph_folder), image_size=64, max_minutes=12.0, device="cpu", cascade=True)
    settled = cascade.choose_cascade(config, new=True)
    assert (settled.data.image_size, settled.train.cascade_scale, settled.sr.noise_aug) == (16, 4, 0.15)


def test_the_built_in_defects_get_the_x2_cascade_without():
    scale, why = choose_scale(Config().override(image_size=64))
    assert scale == 2 and "fine detail" in why
    shares = detail_share(probe_images(Config().override(image_size=64).data, 64), 4)
    assert float(shares.median()) > 2 * DETAIL_LIMIT  # far from the line, not on it


def test_a_size_x4_does_not_fit_and_unreadable_or_flat_folders_fall_back_to_x2(tmp_path, glyph_folder, monkeypatch):
    monkeypatch.setattr(cascade_scale, "probe_images", lambda *a, **k: pytest.fail("probed"))
    assert choose_scale(Config().override(image_size=68))[0] == 2  # 68 / 4 = 17: only an x2 cascade fits
    monkeypatch.undo()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    assert choose_scale(Config().override(data=str(broken), image_size=64)) == (2, "no training image with detail to measure")
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("L", (64, 64), 77).save(flat / "grey.png")
    assert choose_scale(Config().override(data=str(flat), image_size=64))[0] == 2
    # one bad file among good ones is left out of the choice (the training load names it)
    (glyph_folder / "F" / "zz_bad.png").write_bytes(b"broken")
    try:
        assert choose_scale(Config().override(data=str(glyph_folder), image_size=64))[0] == 4
    finally:
        (glyph_folder / "F" / "zz_bad.png").unlink()


def test_the_probe_spreads_over_the_folder(glyph_folder):
    images = probe_images(Config().override(data=str(glyph_folder)).data, 64, limit=10)
    assert images.shape == (10, 3, 64, 64) and images.dtype == torch.uint8
    assert probe_images(Config().override(data=str(glyph_folder)).data, 32, limit=1000).shape[0] == 30
    assert math.isclose(len(probe_images(Config().override(builtin_per_class=2).data, 64)), 8)
