import numpy as np
import pytest
import torch
from PIL import Image

from difforge.data.io import (
    images_to_pil,
    load_npz,
    make_grid,
    save_gif,
    save_image,
    save_images,
    save_npz,
    to_uint8,
)
from difforge.errors import DataError, UserError


def _no_temp_files(folder):
    return not [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_to_uint8_endpoints_and_rounding():
    x = torch.tensor([-1.0, 1.0, 0.0, -2.0, 2.0, float("nan"), -1 + 1 / 255, 1 / 255]).view(1, 1, 1, 8)
    out = to_uint8(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 1, 8, 1)
    # (x + 1) * 127.5 rounded half up: 0 -> 127.5 -> 128; 1/255 -> 128.0 -> 128; -1 + 1/255 -> 0.5 -> 1
    assert out.flatten().tolist() == [0, 255, 128, 0, 255, 128, 1, 128]


def test_to_uint8_layout():
    x = torch.zeros(2, 3, 4, 5)
    x[1, 2] = 1.0
    out = to_uint8(x.requires_grad_())
    assert out.shape == (2, 4, 5, 3) and out.is_contiguous()
    assert (out[1, ..., 2] == 255).all() and (out[1, ..., 0] == 128).all()


def test_grid_shape_and_padding():
    imgs = np.full((5, 4, 6, 3), 7, np.uint8)
    g = make_grid(imgs, padding=2, pad_value=255)
    # ceil(sqrt(5)) = 3 per row, 2 rows
    assert g.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3)
    assert (g[:2] == 255).all() and (g[:, :2] == 255).all()
    assert (g[2:6, 2:8] == 7).all() and (g[6:8, 2:8] == 255).all()
    assert (g[8:12, 2 + 2 * 8 : 8 + 2 * 8] == 255).all()  # the 6th cell is empty
    assert (g == 7).sum() == 5 * 4 * 6 * 3


def test_grid_gray_and_nrow():
    imgs = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    g = make_grid(imgs, nrow=2, padding=0)
    assert g.shape == (3, 2, 1) and g[..., 0].tolist() == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".webp", ".bmp"])
def test_save_image_formats(tmp_path, suffix):
    arr = np.zeros((8, 10, 3), np.uint8)
    arr[:, 5:] = 200
    path = save_image(arr, tmp_path / f"x{suffix}")
    with Image.open(path) as im:
        assert im.size == (10, 8) and im.mode == "RGB"
        assert im.format == {".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix, suffix[1:].upper())
        assert np.abs(np.asarray(im).astype(int) - arr).mean() < 10
    assert _no_temp_files(tmp_path)


def test_save_gray_image_is_L(tmp_path):
    arr = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    with Image.open(save_image(arr, tmp_path / "g.png")) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), arr[..., 0])


def test_save_image_unknown_suffix(tmp_path):
    with pytest.raises(UserError, match="gif2"):
        save_image(np.zeros((2, 2, 3), np.uint8), tmp_path / "x.gif2")


def test_save_is_atomic(tmp_path, monkeypatch):
    target = save_image(np.zeros((2, 2, 3), np.uint8), tmp_path / "x.png")
    before = target.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"half an image")
        raise OSError("disk on fire")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk on fire"):
        save_image(np.full((2, 2, 3), 255, np.uint8), target)
    with pytest.raises(OSError):
        save_image(np.zeros((2, 2, 3), np.uint8), tmp_path / "new.png")
    assert target.read_bytes() == before and not (tmp_path / "new.png").exists()
    assert _no_temp_files(tmp_path)


def test_save_images_names(tmp_path):
    imgs = np.zeros((3, 4, 4, 3), np.uint8)
    paths = save_images(imgs, tmp_path / "a", prefix="sample", start=10)
    assert [p.name for p in paths] == ["sample_00010.png", "sample_00011.png", "sample_00012.png"]
    paths = save_images(imgs, tmp_path / "b", fmt="jpg", labels=np.array([1, 0, 1]), class_names=["crack", "scratch"])
    assert [p.name for p in paths] == ["scratch_00000.jpg", "crack_00001.jpg", "scratch_00002.jpg"]
    assert all(p.is_file() for p in paths) and _no_temp_files(tmp_path)


def test_npz_round_trip(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    path = save_npz(tmp_path / "s.npz", imgs, labels=torch.tensor([0, 1, 2, 1]))
    with np.load(path) as data:  # the layout guided-diffusion's evaluator reads
        assert sorted(data.files) == ["arr_0", "arr_1"]
        assert data["arr_0"].dtype == np.uint8 and data["arr_1"].dtype == np.int64
    got, labels = load_npz(path)
    assert np.array_equal(got, imgs) and labels.tolist() == [0, 1, 2, 1]
    save_npz(tmp_path / "u.npz", imgs)
    got, labels = load_npz(tmp_path / "u.npz")
    assert labels is None and np.array_equal(got, imgs)
    assert _no_temp_files(tmp_path)


def test_load_npz_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", images=np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="no 'arr_0'.*images"):
        load_npz(tmp_path / "other.npz")
    np.savez(tmp_path / "float.npz", np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(DataError, match="uint8"):
        load_npz(tmp_path / "float.npz")
    np.savez(tmp_path / "nchw.npz", np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"\(N, H, W, C\)"):
        load_npz(tmp_path / "nchw.npz")
    np.savez(tmp_path / "obj.npz", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="obj.npz"):
        load_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "badlab.npz", np.zeros((2, 2, 2, 3), np.uint8), np.zeros(3, np.int64))
    with pytest.raises(DataError, match="arr_1"):
        load_npz(tmp_path / "badlab.npz")


def test_save_gif(tmp_path):
    frames = [np.full((6, 6, 3), v, np.uint8) for v in (0, 128, 255)]
    path = save_gif(frames, tmp_path / "t.gif", duration_ms=50)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 3
    assert _no_temp_files(tmp_path)


def test_images_to_pil():
    ims = images_to_pil(np.zeros((2, 3, 4, 1), np.uint8))
    assert [im.mode for im in ims] == ["L", "L"] and ims[0].size == (4, 3)
    assert images_to_pil(np.zeros((1, 3, 4, 3), np.uint8))[0].mode == "RGB"
