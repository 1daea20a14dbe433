"""A full disk (and a read-only or forbidden folder) at every write site: exit 2, one line naming the
file and what was kept, no traceback, and the previous checkpoint still loads."""

import contextlib
import errno
import logging
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from difforge.atomic import atomic_write, write_bytes, write_error
from difforge.cli.main import main
from difforge.errors import UserError
from difforge.modelfile import save_model_file
from tests.conftest import TINY_NET

TRAIN = ["--image-size", "16", "--base-channels", str(TINY_NET["base_channels"]), "--channel-mult", "1,2",
         "--num-res-blocks", "1", "--attention-resolutions", "8", "--head-channels", "16", "--builtin-per-class", "4",
         "--batch-size", "4", "--precision", "fp32", "--quiet", "--preview-num", "2", "--preview-steps", "2", "--log-every", "1"]


def _train(tmp_path, *extra):
    return main(["train", "--runs-dir", str(tmp_path / "runs"), "--run", "r", *TRAIN, *extra])


def _one_line(capsys, code, *words):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "Logging error" not in err, err
    lines = [l for l in err.strip().splitlines() if "error:" in l]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@contextlib.contextmanager
def full_disk_for(monkeypatch, name, code=errno.ENOSPC):
    """os.replace raises ``code`` when it would put a file called ``name`` in place (every atomic write)."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == name:
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr("difforge.atomic.os.replace", replace)
    yield
    monkeypatch.setattr("difforge.atomic.os.replace", real)


# -- the writer ------------------------------------------------------------------------------
@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "quota"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permission denied")])
def test_atomic_write_maps_errors_and_keeps_the_old_file(tmp_path, monkeypatch, code, words):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with full_disk_for(monkeypatch, "f.bin", code), pytest.raises(UserError) as e:
        write_bytes(target, b"new")
    assert str(target) in str(e.value) and words in str(e.value) and "previous f.bin is unchanged" in str(e.value)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary file left


def test_other_os_errors_keep_their_type(tmp_path):
    with pytest.raises(IsADirectoryError):
        with atomic_write(tmp_path / "x") as tmp:
            raise IsADirectoryError(errno.EISDIR, "x")


def test_wrapped_os_error_of_safetensors_is_recognised():
    from safetensors import SafetensorError

    e = write_error("m.safetensors", SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert e is not None and "disk full" in str(e)


def test_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes(tmp_path / "a", b"x")
        os.umask(0o077)
        write_bytes(tmp_path / "b", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o600


def test_model_files_follow_the_umask(tmp_path):
    """safetensors replaces our temporary file with its own (0600): the mode is set after it wrote."""
    old = os.umask(0o022)
    try:
        path = save_model_file(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, {"kind": "diffusion"})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# -- a real small tmpfs (root only) ------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("needs root and mount for a small tmpfs")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk_safetensors(tiny_fs):
    small = save_model_file(tiny_fs / "small.safetensors", {"w": torch.zeros(8)}, {"kind": "diffusion"})
    with pytest.raises(UserError, match=r"small.safetensors: disk full; the previous small.safetensors is unchanged"):
        save_model_file(small, {"w": torch.zeros(200_000)}, {"kind": "diffusion"})
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["small.safetensors"]


def test_real_full_disk_training(tiny_fs, capsys):
    code = main(["train", "--runs-dir", str(tiny_fs), "--run", "r", *TRAIN, "--max-steps", "2"])
    _one_line(capsys, code, "disk full", str(tiny_fs / "r" / "checkpoints"))


# -- every write site of training, through the CLI -----------------------------------------------
@pytest.mark.parametrize("name", ["config.yaml", "state.safetensors", "ema.safetensors", "last.safetensors", "metrics.csv"])
def test_train_site_full(tmp_path, monkeypatch, capsys, name):
    with full_disk_for(monkeypatch, name):
        code = _train(tmp_path, "--max-steps", "2")
    _one_line(capsys, code, name, "disk full")


def test_metrics_append_full(tmp_path, monkeypatch, capsys):
    import csv

    real = csv.DictWriter.writerow

    def writerow(self, row):
        if "loss" in row:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", writerow)
    code = _train(tmp_path, "--max-steps", "2")
    _one_line(capsys, code, "metrics.csv", "disk full", "rows logged before are kept")


def test_log_txt_full_warns_once_and_training_finishes(tmp_path, monkeypatch, capsys):
    from difforge.train import logging as tlog

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tlog._RunLogHandler, "flush", flush)
    code = _train(tmp_path, "--max-steps", "2")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "Logging error" not in err
    assert err.count("cannot write") == 1 and "log.txt" in err
    assert not any(isinstance(h, tlog._RunLogHandler) for h in logging.getLogger("difforge").handlers)


def test_previous_checkpoint_survives_a_full_disk_on_resume(tmp_path, monkeypatch, capsys):
    from difforge.train.checkpoint import load_training_state

    assert _train(tmp_path, "--max-steps", "2") == 0
    capsys.readouterr()
    state = tmp_path / "runs" / "r" / "checkpoints" / "state.safetensors"
    with full_disk_for(monkeypatch, "state.safetensors"):
        code = main(["train", "--resume", str(tmp_path / "runs" / "r"), "--max-steps", "4", "--quiet"])
    _one_line(capsys, code, "state.safetensors", "previous state.safetensors is unchanged")
    assert load_training_state(state)["loop"]["step"] == 2


# -- sampling outputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,flags", [("scratch_00001.png", []), ("o-grid_scratch.png", ["--grid"]), ("samples_2x16x16x3.npz", ["--npz"])])
def test_sample_output_full(tiny_model, tmp_path, monkeypatch, capsys, name, flags):
    with full_disk_for(monkeypatch, name):
        code = main(["sample", str(tiny_model), "--num", "2", "--steps", "2", "--class", "0", "--quiet", "--out", str(tmp_path / "o"), *flags])
    _one_line(capsys, code, name, "disk full")


def test_read_only_output_folder(tiny_model, tmp_path, monkeypatch, capsys):
    with full_disk_for(monkeypatch, "scratch_00000.png", errno.EROFS):
        code = main(["sample", str(tiny_model), "--num", "1", "--steps", "2", "--quiet", "--out", str(tmp_path / uuid.uuid4().hex)])
    _one_line(capsys, code, "scratch_00000.png", "read-only")
