"""What sampling leaves on disk (issue 17, items 8 and 9): numbered default folders, grids beside the
samples, streaming in batches, the .npz, file modes, and eval reading only samples."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from difforge.cli.main import main
from difforge.data.outputs import BatchWriter, numbered_folder
from difforge.metrics.sources import folder_source
from difforge.pipeline import Pipeline
from difforge.pipeline.stream import generate_batches


@pytest.fixture
def model_in_run(tiny_model, tmp_path):
    """A copy of the tiny model at runs/x/checkpoints/ema.safetensors (default output: runs/x/samples/ema)."""
    dst = tmp_path / "runs" / "x" / "checkpoints" / "ema.safetensors"
    dst.parent.mkdir(parents=True)
    dst.write_bytes(tiny_model.read_bytes())
    return dst


def _sample(model, *flags):
    return main(["sample", str(model), "--steps", "2", "--quiet", *map(str, flags)])


def test_default_folder_is_numbered_not_overwritten(model_in_run, capsys):
    samples = model_in_run.parent.parent / "samples"
    assert _sample(model_in_run, "--num", "2") == 0
    first = capsys.readouterr().out
    assert f"2 images in {samples / 'ema'}" in first
    assert _sample(model_in_run, "--num", "3") == 0
    second = capsys.readouterr().out
    assert "holds earlier samples; writing to" in second and str(samples / "ema-2") in second
    assert len(list((samples / "ema").glob("*.png"))) == 2 and len(list((samples / "ema-2").glob("*.png"))) == 3
    assert len((samples / "ema-2" / "manifest.jsonl").read_text().splitlines()) == 3  # data/manifest.py
    assert _sample(model_in_run, "--num", "1") == 0
    assert (samples / "ema-3").is_dir()


def test_explicit_out_is_used_as_given(model_in_run, tmp_path, capsys):
    out = tmp_path / "mine"
    assert _sample(model_in_run, "--num", "1", "--out", out) == 0
    assert _sample(model_in_run, "--num", "1", "--out", out) == 0
    assert "earlier samples" not in capsys.readouterr().out
    assert not (tmp_path / "mine-2").exists()


def test_numbered_folder_takes_an_empty_one(tmp_path):
    (tmp_path / "a").mkdir()
    assert numbered_folder(tmp_path / "a") == tmp_path / "a"
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "a-2").mkdir()
    assert numbered_folder(tmp_path / "a") == tmp_path / "a-2"


def test_grids_and_trajectory_go_beside_the_samples(tiny_model, tmp_path, capsys):
    out = tmp_path / "s"
    assert _sample(tiny_model, "--num", "1", "--class", "all", "--grid", "--trajectory", "--trajectory-frames", "2", "--out", out) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["crack_00002.png", "inclusion_00001.png", "manifest.jsonl", "patch_00003.png",
                                                      "scratch_00000.png"]
    grids = sorted(p.name for p in tmp_path.glob("s-grid_*.png"))
    assert grids == ["s-grid_crack.png", "s-grid_inclusion.png", "s-grid_patch.png", "s-grid_scratch.png"]
    assert (tmp_path / "s-trajectory.png").is_file()
    assert f"grid: {tmp_path / 's-grid_scratch.png'}" in printed


def test_eval_skips_old_grids_inside_a_sample_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ["sample_00000.png", "sample_00001.png", "sample_00002.png", "grid.png", "grid_crack.png", "trajectory.png", "interpolation.png"]:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / name)
    src = folder_source(tmp_path)
    assert src.count == 3 and "4 grid/trajectory pictures skipped" in src.name
    assert sum(len(b) for b in src.batches(2)) == 3


def test_streaming_matches_generate_and_keeps_one_batch(tiny_model, tmp_path):
    pipe = Pipeline.from_checkpoint(tiny_model)
    whole = pipe.generate(num=5, class_label=None, steps=2, seed=3)
    parts = list(generate_batches(pipe, num=5, steps=2, seed=3, batch_size=2))
    assert [len(p.images) for p in parts] == [2, 2, 1]
    assert torch.equal(torch.cat([p.images for p in parts]), whole.images)
    assert torch.cat([p.labels for p in parts]).tolist() == whole.labels.tolist()
    writer = BatchWriter(tmp_path / "o")
    for p in parts:
        writer.add(p)
        assert writer._kept == [] and writer._grid == {}  # nothing held without --npz / --grid
    assert len(writer.close()["images"]) == 5


def test_cli_streams_in_batches_and_still_writes_the_npz(tiny_model, tmp_path, monkeypatch, capsys):
    import difforge.pipeline.core as core

    calls = []
    real = core.Pipeline.sample_batches

    def spy(self, seeds, *a, **k):
        calls.append(len(seeds))
        return real(self, seeds, *a, **k)

    monkeypatch.setattr(core.Pipeline, "sample_batches", spy)
    out = tmp_path / "o"
    assert _sample(tiny_model, "--num", "5", "--batch-size", "2", "--npz", "--out", out) == 0
    assert calls == [2, 2, 1]  # one batch at a time, each written before the next is made
    z = np.load(out / "samples_5x16x16x3.npz")
    assert z["arr_0"].shape == (5, 16, 16, 3) and z["arr_0"].dtype == np.uint8
    assert z["arr_1"].tolist() == [0, 1, 2, 3, 0]
    saved = np.asarray(Image.open(out / "scratch_00004.png"))
    assert np.array_equal(saved, z["arr_0"][4])


def test_files_follow_the_umask(tiny_model, tmp_path):
    old = os.umask(0o022)
    try:
        assert _sample(tiny_model, "--num", "1", "--out", tmp_path / "o") == 0
    finally:
        os.umask(old)
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / "o").iterdir())


def test_train_bar_names_its_smoothed_loss():
    from difforge.train.logging import progress_bar

    bar = progress_bar(10, enabled=True)
    bar.set_postfix(loss="0.1234", lr="1e-3")
    assert str(bar).count("loss~=0.1234") == 1 and "lr=1e-3" in str(bar)
    bar.close()


def test_convert_refusal_gives_the_reason_whole(tmp_path, capsys):
    """torch's weights-only error starts with 200 characters of preamble; the reason is at its end."""
    import pickle

    bad = tmp_path / "plain_pickle.pt"
    bad.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    code = main(["convert", str(bad), "--from", "dit", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "refused: not a plain tensor state dict (a weights-only load stops at: Unsupported operand" in err
    assert err.strip().endswith("is it a PyTorch checkpoint?)")


def test_train_says_model_file_once(tmp_path, capsys):
    from tests.conftest import TINY_NET

    code = main(["train", "--runs-dir", str(tmp_path), "--image-size", "16", "--base-channels", str(TINY_NET["base_channels"]),
                 "--channel-mult", "1,2", "--num-res-blocks", "1", "--attention-resolutions", "8", "--builtin-per-class", "2",
                 "--batch-size", "4", "--max-steps", "1", "--precision", "fp32", "--quiet", "--preview-num", "1", "--preview-steps", "1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert (out.out + out.err).count("model file:") == 1
