import numpy as np
import pytest
import torch
from PIL import Image

from difforge.data.folder import (
    IMAGE_EXTENSIONS,
    dataset_memory_bytes,
    load_folder,
    load_image,
    scan_folder,
)
from difforge.errors import DataError


def _png(path, color=(200, 30, 30), size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


# ----------------------------------------------------------------------------- scanning


def test_class_folders_are_conditional_with_sorted_names(tmp_path):
    _png(tmp_path / "scratch" / "b.png")
    _png(tmp_path / "scratch" / "a.PNG")
    _png(tmp_path / "crack" / "deep" / "x.jpg")  # recursive inside a class folder
    _png(tmp_path / "crack" / ".hidden.png")
    _png(tmp_path / ".cache" / "c.png")  # hidden folder is not a class
    (tmp_path / "empty_dir").mkdir()  # folder without images is not a class
    (tmp_path / "crack" / "notes.txt").write_text("x")
    idx = scan_folder(tmp_path)
    assert idx.conditional and idx.class_names == ["crack", "scratch"]
    assert [p.relative_to(tmp_path).as_posix() for p in idx.paths] == ["crack/deep/x.jpg", "scratch/a.PNG", "scratch/b.png"]
    assert idx.labels == [0, 1, 1]


def test_flat_folder_is_unconditional(tmp_path):
    for name in ("b.png", "a.jpeg", "c.TIFF", ".d.png"):
        _png(tmp_path / name)
    (tmp_path / "readme.md").write_text("x")
    idx = scan_folder(tmp_path)
    assert not idx.conditional and idx.class_names == []
    assert [p.name for p in idx.paths] == ["a.jpeg", "b.png", "c.TIFF"]
    assert idx.labels == [0, 0, 0]


def test_no_conditional_on_class_folders_uses_every_image(tmp_path):
    _png(tmp_path / "a" / "1.png")
    _png(tmp_path / "b" / "2.png")
    idx = scan_folder(tmp_path, conditional=False)
    assert not idx.conditional and idx.class_names == [] and len(idx.paths) == 2


def test_single_class_folder_is_unconditional_by_default(tmp_path):
    _png(tmp_path / "only" / "1.png")
    idx = scan_folder(tmp_path)
    assert not idx.conditional and len(idx.paths) == 1


def test_loose_images_next_to_class_folders_are_ignored_and_reported(tmp_path):
    _png(tmp_path / "a" / "1.png")
    _png(tmp_path / "b" / "2.png")
    _png(tmp_path / "preview.png")
    idx = scan_folder(tmp_path)
    assert [p.name for p in idx.paths] == ["1.png", "2.png"]
    assert [p.name for p in idx.ignored] == ["preview.png"]


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        scan_folder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


def test_file_instead_of_folder(tmp_path):
    f = _png(tmp_path / "x.png")
    with pytest.raises(DataError, match="not a folder") as e:
        scan_folder(f)
    assert str(f) in str(e.value)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="empty") as e:
        scan_folder(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_folder_without_images_names_the_extensions(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="no images") as e:
        scan_folder(tmp_path)
    assert str(tmp_path) in str(e.value) and all(ext in str(e.value) for ext in IMAGE_EXTENSIONS)


def test_conditional_needs_two_classes(tmp_path):
    _png(tmp_path / "only" / "1.png")
    with pytest.raises(DataError, match="single class 'only'.*--no-conditional") as e:
        scan_folder(tmp_path, conditional=True)
    assert str(tmp_path) in str(e.value)


def test_conditional_on_flat_folder(tmp_path):
    _png(tmp_path / "1.png")
    with pytest.raises(DataError, match="no class sub-folders") as e:
        scan_folder(tmp_path, conditional=True)
    assert str(tmp_path) in str(e.value)


# ----------------------------------------------------------------------------- decoding modes


def _write_mode(path, mode):
    """Write an 8x8 test image of the given Pillow mode; the left half is dark, the right half bright."""
    if mode == "L":
        im = Image.fromarray(np.repeat([[20] * 4 + [220] * 4], 8, 0).astype(np.uint8), "L")
    elif mode == "LA":
        im = Image.merge("LA", [Image.fromarray(np.repeat([[20] * 4 + [220] * 4], 8, 0).astype(np.uint8)), Image.new("L", (8, 8), 255)])
    elif mode in ("RGB", "CMYK", "P"):
        arr = np.zeros((8, 8, 3), np.uint8)
        arr[:, :4] = (20, 20, 20)
        arr[:, 4:] = (220, 220, 220)
        im = Image.fromarray(arr, "RGB")
        im = im.convert("CMYK") if mode == "CMYK" else im.quantize(4) if mode == "P" else im
    elif mode == "RGBA":
        arr = np.zeros((8, 8, 4), np.uint8)
        arr[:, :4] = (20, 20, 20, 255)
        arr[:, 4:] = (0, 0, 0, 0)  # fully transparent -> white
        im = Image.fromarray(arr, "RGBA")
    elif mode == "P_transparent":
        im = Image.new("P", (8, 8), 0)
        im.putpalette([20, 20, 20, 0, 0, 0] + [0] * 762)
        im.paste(1, (4, 0, 8, 8))
        im.info["transparency"] = 1  # palette index 1 is transparent -> white
    elif mode == "I;16":
        im = Image.fromarray(np.repeat([[20 * 257] * 4 + [220 * 257] * 4], 8, 0).astype(np.uint16))
        assert im.mode.startswith("I;16")
    elif mode == "I":
        im = Image.fromarray(np.repeat([[20 * 257] * 4 + [220 * 257] * 4], 8, 0).astype(np.int32), "I")
    elif mode == "F":
        im = Image.fromarray(np.repeat([[-5.0] * 4 + [300.0] * 4], 8, 0).astype(np.float32), "F")
    else:
        raise AssertionError(mode)
    suffix = ".tif" if mode in ("I", "F", "CMYK") else ".png"
    path = path.with_suffix(suffix)
    im.save(path, format="TIFF" if suffix == ".tif" else "PNG")
    return path


MODES = ["L", "LA", "RGB", "RGBA", "P", "P_transparent", "CMYK", "I;16", "I", "F"]
EXPECTED_RIGHT = {"RGBA": 255, "P_transparent": 255, "F": 255}  # transparent -> white; F stretched


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_mode_loads(tmp_path, mode, channels):
    path = _write_mode(tmp_path / "im", mode)
    arr = load_image(path, 8, channels)
    assert arr.shape == (8, 8, channels) and arr.dtype == np.uint8
    left, right = arr[:, :4].astype(int), arr[:, 4:].astype(int)
    want_left = 0 if mode == "F" else 20
    assert np.abs(left - want_left).max() <= 3, (mode, left[0, 0])
    assert np.abs(right - EXPECTED_RIGHT.get(mode, 220)).max() <= 3, (mode, right[0, 0])


def test_sixteen_bit_png_from_numpy(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((6, 6), 65535, np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")
    assert (load_image(path, 6, 1) == 255).all()
    assert (load_image(path, 6, 3) == 255).all()


def test_big_endian_sixteen_bit_tiff(tmp_path):
    path = tmp_path / "be.tif"
    Image.frombytes("I;16B", (4, 4), np.full((4, 4), 50000, ">u2").tobytes()).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16B"
    assert (load_image(path, 4, 1) == 195).all()  # 50000 / 257 = 194.6
    assert (load_image(path, 4, 3) == 195).all()


def test_int32_image_outside_16_bit_range_is_stretched(tmp_path):
    path = tmp_path / "i.tif"
    Image.fromarray(np.array([[-100000, 100000]] * 2, np.int32), "I").save(path)
    out = load_image(path, 2, 1)[..., 0]
    assert out[:, 0].max() <= 1 and out[:, 1].min() >= 254


def test_float_image_in_unit_range_is_scaled_not_stretched(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(path)
    assert (load_image(path, 4, 1) == 128).all()


def test_resize_and_center_crop(tmp_path):
    # 30 x 10: red | green | blue thirds; the center crop keeps only green
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, :10] = (255, 0, 0)
    arr[:, 10:20] = (0, 255, 0)
    arr[:, 20:] = (0, 0, 255)
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)
    out = load_image(path, 5, 3).astype(int)
    assert out.shape == (5, 5, 3)
    # the bicubic kernel reaches one source pixel past the crop, so the border columns get a tint
    assert np.abs(out[:, 1:-1] - (0, 255, 0)).max() <= 2
    assert out[..., 1].min() > 225 and out[..., 0].max() < 30 and out[..., 2].max() < 30
    assert out[:, 0, 0].min() > 0 and out[:, -1, 2].min() > 0  # red left, blue right: not flipped
    tall = tmp_path / "tall.png"
    Image.fromarray(arr.transpose(1, 0, 2).copy()).save(tall)
    out = load_image(tall, 20, 3).astype(int)  # upscaling 10 -> 20
    assert np.abs(out[2:-2] - (0, 255, 0)).max() <= 2 and out[..., 0].max() < 60


def test_downscale_is_antialiased(tmp_path):
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    path = tmp_path / "c.png"
    Image.fromarray(checker).save(path)
    out = load_image(path, 8, 1).astype(int)
    assert np.abs(out - 128).max() <= 10  # aliasing would give black/white pixels


def test_hflip(tmp_path):
    path = _write_mode(tmp_path / "im", "RGB")
    a = load_image(path, 8, 3)
    b = load_image(path, 8, 3, hflip=True)
    assert np.array_equal(a[:, ::-1], b) and not np.array_equal(a, b)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((4, 8, 3), np.uint8)
    arr[:, :4] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=100)
    out = load_image(path, 4, 1, hflip=False)
    # after rotating clockwise the white half is on top
    assert out[:2].mean() > 200 and out[2:].mean() < 60


# ----------------------------------------------------------------------------- load_folder


def _dataset(tmp_path, n_per_class=3):
    for c, color in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        for i in range(n_per_class):
            _png(tmp_path / c / f"{i}.png", color, size=(16, 12))
    return tmp_path


def test_load_folder(tmp_path):
    idx = scan_folder(_dataset(tmp_path))
    out = load_folder(idx, 8, channels=3, progress=False)
    assert out.images.shape == (6, 3, 8, 8) and out.images.dtype == torch.uint8 and out.images.is_contiguous()
    assert out.labels.dtype == torch.int64 and out.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert out.class_names == ["a", "b"] and out.paths == idx.paths and out.bad == []
    assert out.images[0, 0].float().mean() > 250 and out.images[5, 2].float().mean() > 250
    gray = load_folder(idx, 8, channels=1, progress=False, workers=1)
    assert gray.images.shape == (6, 1, 8, 8)


def _truncated_png(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_and_truncated_files_are_reported(tmp_path):
    _dataset(tmp_path)
    junk = tmp_path / "a" / "junk.png"
    junk.write_bytes(np.random.default_rng(1).bytes(300))
    trunc = tmp_path / "b" / "trunc.png"
    _truncated_png(trunc)
    idx = scan_folder(tmp_path)
    with pytest.raises(DataError) as e:
        load_folder(idx, 8, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "--skip-bad-images" in msg
    assert msg.startswith("2 of 8 images") and "a/junk.png (" in msg and "b/trunc.png (" in msg
    assert "truncated" in msg

    out = load_folder(idx, 8, skip_bad=True, progress=False)
    assert len(out.images) == 6 and len(out.labels) == 6 and out.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert {p for p, _ in out.bad} == {junk, trunc} and all(reason for _, reason in out.bad)
    assert junk not in out.paths and trunc not in out.paths and len(out.paths) == 6


def test_long_list_of_bad_files_is_shortened(tmp_path):
    _png(tmp_path / "good.png")
    for i in range(13):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"\.\.\. and 3 more"):
        load_folder(scan_folder(tmp_path), 8, progress=False)


def test_all_bad_is_an_error_even_with_skip_bad(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="none of the 1 images") as e:
        load_folder(scan_folder(tmp_path), 8, skip_bad=True, progress=False)
    assert str(tmp_path) in str(e.value) and "x.png (" in str(e.value)


def test_dataset_memory_bytes():
    assert dataset_memory_bytes(10_000, 3, 64) == 122_880_000
