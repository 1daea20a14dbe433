"""Bad data folders (issue 17): link loops, emptied classes, small classes, undecodable names, bombs.

Each test drives the library function and, where the CLI needs nothing new, `difforge train` too.
"""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from difforge.cli.main import main
from difforge.data import folder as folder_mod
from difforge.data.folder import load_folder, load_image, scan_folder
from difforge.data.scan import printable
from difforge.errors import DataError
from tests.conftest import TINY_NET

TINY_FLAGS = [
    "--image-size", "16", "--base-channels", str(TINY_NET["base_channels"]), "--channel-mult", "1,2",
    "--num-res-blocks", "1", "--attention-resolutions", "8", "--head-channels", "16",
    "--batch-size", "4", "--max-steps", "1", "--precision", "fp32", "--quiet", "--checkpoint-every", "1000",
]


def _images(d, n, start=0):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 255, (12, 14, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def _train(tmp_path, data, *extra):
    return main(["train", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--run", "t", *TINY_FLAGS, *extra])


def _log(tmp_path):
    return (tmp_path / "runs" / "t" / "log.txt").read_text(encoding="utf-8")


def _one_line(err, *words):
    lines = [l for l in err.strip().splitlines() if "error" in l]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- 1. link loops


def _looped(root, every_kind=True):
    """16 + 16 images in two classes and a link a/loop -> root, which `os.walk(followlinks=True)`
    read as 1,312 images, b's under class a; ``every_kind`` adds the other links back into the tree."""
    _images(root / "a" / "sub", 16)
    _images(root / "b", 16, start=16)
    os.symlink("..", root / "a" / "loop")
    if not every_kind:
        return root
    os.symlink("../..", root / "a" / "sub" / "up")  # a/sub/up -> root
    os.symlink(".", root / "b" / "self")  # b/self -> b
    os.symlink("a", root / "c")  # a class folder that is a link to another class
    return root


def test_link_loop_is_not_followed_and_named(tmp_path):
    root = _looped(tmp_path / "d")
    idx = scan_folder(root)
    assert idx.class_names == ["a", "b"] and len(idx.paths) == 32
    assert idx.labels == [0] * 16 + [1] * 16
    assert all(os.path.realpath(p).startswith(os.path.realpath(root / "a")) for p in idx.paths[:16])
    text = " | ".join(idx.warnings)
    for link in ("a/loop", "a/sub/up", "b/self", "c"):
        assert f"link {link} leads back into the data folder" in text, text
    assert all("\n" not in w for w in idx.warnings)


def test_outside_folder_is_read_once_and_its_own_loop_never(tmp_path):
    outside = _images(tmp_path / "outside", 5, start=50)
    os.symlink(outside, outside / "again")  # a loop outside the tree
    root = tmp_path / "d"
    _images(root / "a", 3)
    _images(root / "b", 3, start=3)
    os.symlink(outside, root / "a" / "ext")
    os.symlink(outside, root / "b" / "ext")  # the same folder a second time: not read again
    idx = scan_folder(root)
    assert len(idx.paths) == 3 + 5 + 3 and idx.labels == [0] * 8 + [1] * 3
    text = " | ".join(idx.warnings)
    assert "link b/ext leads to" in text and "already read" in text
    assert "again" in text


def test_link_loop_through_the_cli(tmp_path, capsys):
    root = _looped(tmp_path / "d", every_kind=False)
    assert _train(tmp_path, root) == 0, capsys.readouterr().err
    log = _log(tmp_path)
    assert "data: 32 images" in log
    assert "leads back into the data folder" in log and "small data" in log  # the loader's warnings reach the run log


def test_skipped_files_and_dropped_class_reach_the_run_log(tmp_path, capsys):
    root = _with_bad(_images(tmp_path / "d" / "b", 3).parent, 12, cls="a")
    _images(root / "c", 3, start=3)
    assert _train(tmp_path, root, "--skip-bad-images", "--drop-empty-classes") == 0, capsys.readouterr().err
    log = _log(tmp_path)
    assert "all skipped images:" in log and log.count("bad1") >= 2  # every one of the 12 is listed in the log
    assert "2 classes (b, c)" in log


# ----------------------------------------------------------------------------- 7. skipped files, emptied classes, small classes


def _with_bad(root, n_bad, cls="a"):
    (root / cls).mkdir(parents=True, exist_ok=True)
    for i in range(n_bad):
        (root / cls / f"bad{i:02d}.png").write_bytes(b"not an image")
    return root


def test_skipped_files_are_named_first_ten_and_count(tmp_path):
    root = _with_bad(_images(tmp_path / "d" / "a", 20).parent, 13)
    _images(root / "b", 20, start=20)
    out = load_folder(scan_folder(root), 8, skip_bad=True, progress=False)
    assert len(out.images) == 40 and len(out.bad) == 13
    (line,) = [w for w in out.warnings if w.startswith("skipped")]
    assert "skipped 13 of 53 images" in line and "a/bad00.png (" in line and "a/bad09.png (" in line
    assert "a/bad10.png" not in line and "... and 3 more" in line and "\n" not in line


def test_emptied_class_is_refused_naming_class_and_files(tmp_path, capsys):
    root = tmp_path / "d"
    _images(root / "a", 20)
    _with_bad(_images(root / "b", 20, start=20).parent, 2, cls="c")
    with pytest.raises(DataError) as e:
        load_folder(scan_folder(root), 8, skip_bad=True, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "class folder 'c'" in msg and "c/bad00.png (" in msg and "c/bad01.png (" in msg
    assert "--drop-empty-classes" in msg and printable(root) in msg

    assert _train(tmp_path, root, "--skip-bad-images") == 2
    _one_line(capsys.readouterr().err, "class folder 'c'", "c/bad00.png")


def test_emptied_class_dropped_when_asked(tmp_path):
    root = tmp_path / "d"
    _images(root / "a", 20)
    _with_bad(_images(root / "b", 2).parent, 1, cls="b0")
    _images(root / "c", 20, start=20)
    out = load_folder(scan_folder(root), 8, skip_bad=True, progress=False, drop_empty_classes=True)
    assert out.class_names == ["a", "b", "c"] and out.labels.tolist() == [0] * 20 + [1] * 2 + [2] * 20
    assert any("class 'b0' dropped" in w and "b0/bad00.png" in w for w in out.warnings), out.warnings


def test_one_class_left_becomes_unconditional_out_loud(tmp_path):
    from difforge.config import DataConfig
    from difforge.data.source import load_training_images

    root = tmp_path / "d"
    _images(root / "a", 20)
    _with_bad(root, 2, cls="b")
    out = load_folder(scan_folder(root), 8, skip_bad=True, progress=False, drop_empty_classes=True)
    assert out.class_names == [] and not out.conditional and out.labels.tolist() == [0] * 20
    assert any("model is unconditional" in w for w in out.warnings), out.warnings

    cfg = DataConfig(data=str(root), image_size=8, conditional=True, skip_bad_images=True)
    cfg.drop_empty_classes = True  # the field the config will carry
    with pytest.raises(DataError, match="--no-conditional"):
        load_training_images(cfg, progress=False)


def test_training_images_carry_warnings_and_every_bad_file(tmp_path):
    from difforge.config import DataConfig
    from difforge.data.source import load_training_images

    root = _with_bad(_images(tmp_path / "d" / "a", 20).parent, 12)
    _images(root / "b", 20, start=20)
    data = load_training_images(DataConfig(data=str(root), image_size=8, skip_bad_images=True), progress=False)
    assert data.skipped == 12 and len(data.bad) == 12 and any(w.startswith("skipped 12") for w in data.warnings)


def test_small_classes_get_small_data_advice(tmp_path):
    root = tmp_path / "d"
    _images(root / "a", 7)
    _images(root / "b", 20, start=7)
    out = load_folder(scan_folder(root), 8, progress=False)
    (w,) = [w for w in out.warnings if w.startswith("small data")]
    assert "'a' (7 images)" in w and "'b'" not in w and "--hflip" in w
    flat = _images(tmp_path / "flat", 5)
    (w,) = load_folder(scan_folder(flat), 8, progress=False).warnings
    assert "small data: the dataset (5 images)" in w
    big = load_folder(scan_folder(root / "b"), 8, progress=False)
    assert big.warnings == []


def test_single_class_folder_says_it_is_unconditional(tmp_path):
    root = tmp_path / "d"
    _images(root / "only", 20)
    (root / "notes").mkdir()
    idx = scan_folder(root)
    assert not idx.conditional
    assert any("model is unconditional" in w and "'only'" in w for w in idx.warnings)
    assert any("notes" in w and "not classes" in w for w in idx.warnings)


# ----------------------------------------------------------------------------- 8. names that are not UTF-8


def _bytes_dir(root, name: bytes):
    path = os.path.join(os.fsencode(root), name)
    try:
        os.mkdir(path)
    except (OSError, UnicodeError):  # pragma: no cover - a file system that refuses such names
        pytest.skip("the file system refuses names that are not UTF-8")
    return type(root)(os.fsdecode(path))


def test_class_folder_name_not_utf8_is_printable(tmp_path, capsys):
    root = tmp_path / "d"
    root.mkdir()
    odd = _bytes_dir(root, b"\xff\xfeclass")
    _images(odd, 3)
    _images(root / "plain", 3, start=3)
    idx = scan_folder(root)
    assert idx.class_names == ["plain", "\\xff\\xfeclass"]  # sorted by the real name
    for name in idx.class_names:
        name.encode("utf-8")  # no surrogates left: logging and model metadata can store it
    assert os.fsencode(idx.paths[-1]).startswith(os.fsencode(odd))  # the real path is kept for reading
    out = load_folder(idx, 8, progress=False)
    assert len(out.images) == 6

    (odd / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError) as e:
        load_folder(scan_folder(root), 8, progress=False)
    assert "\\xff\\xfeclass/bad.png (" in str(e.value)
    str(e.value).encode("utf-8")
    (odd / "bad.png").unlink()

    assert _train(tmp_path, root) == 0, capsys.readouterr().err
    log = _log(tmp_path)
    assert "\\xff\\xfeclass" in log and "Logging error" not in capsys.readouterr().err


def test_printable_escapes_controls_and_keeps_ordinary_text():
    assert printable("café/x y.png") == "café/x y.png"
    assert printable("a\nb") == "a\\nb"
    assert printable(os.fsdecode(b"\xffz")) == "\\xffz"


# ----------------------------------------------------------------------------- decompression bombs


def _png_header(path, width, height):
    """A valid tiny PNG whose header claims ``width`` x ``height``: what a decompression bomb looks like."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_refused_with_a_clear_reason(tmp_path):
    root = tmp_path / "d"
    _images(root, 3)
    _png_header(root / "bomb.png", 30000, 30000)
    with pytest.raises(folder_mod.ImageTooLarge, match="megapixel limit"):
        load_image(root / "bomb.png", 8, 3)
    with pytest.raises(DataError) as e:
        load_folder(scan_folder(root), 8, progress=False)
    msg = str(e.value)
    assert "bomb.png (ImageTooLarge: 900000000 pixels is over the 100-megapixel limit" in msg and "\n" not in msg
    out = load_folder(scan_folder(root), 8, skip_bad=True, progress=False)
    assert len(out.images) == 3 and "decompression bomb" in out.bad[0][1]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_over_our_own_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    path = _png_header(tmp_path / "big.png", 12000, 9000)  # 108 Mpx: under Pillow's error size, over ours
    with pytest.raises(folder_mod.ImageTooLarge, match="12000x9000 pixels"):
        load_image(path, 8, 3)
    monkeypatch.setattr(folder_mod, "MAX_IMAGE_PIXELS", 100)
    small = tmp_path / "s.png"
    Image.new("RGB", (20, 20)).save(small)
    with pytest.raises(folder_mod.ImageTooLarge, match="20x20 pixels"):
        load_image(small, 8, 3)
