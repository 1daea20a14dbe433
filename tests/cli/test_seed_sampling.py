"""The seed tools' documented sampling command lines run through `difforge sample` / `generate`.

Sizes, steps and counts are scaled down; the flags are otherwise those of the tools' READMEs.
Model flags that describe the network are checked against the model file (tiny_model: a 16 px
class-conditional UNet with 4 classes, num_res_blocks 1, T=1000).
"""

import numpy as np
import pytest

from difforge.cli.main import main
from difforge.modelfile import read_metadata


def _run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def meta(tiny_model):
    return read_metadata(tiny_model)


def test_improved_diffusion_image_sample_respaced_ddpm(tiny_model, meta, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = meta["diffusion"]
    rc, out, err = _run(["sample", "--model_path", str(tiny_model), "--image_size", "16", "--num_res_blocks", "1",
                         "--diffusion_steps", str(d["diffusion_steps"]), "--noise_schedule", d["noise_schedule"],
                         "--timestep_respacing", "5", "--num_samples", "4", "--batch_size", "2", "--out", "o", "--quiet"], capsys)
    assert rc == 0, err
    arr = np.load(tmp_path / "o" / "samples_4x16x16x3.npz")
    assert arr["arr_0"].shape == (4, 16, 16, 3) and arr["arr_0"].dtype == np.uint8


def test_use_ddim_and_clip_denoised_bools(tiny_model, tmp_path, capsys):
    rc, _, err = _run(["sample", "--model_path", str(tiny_model), "--timestep_respacing", "ddim5", "--use_ddim", "True",
                       "--clip_denoised", "True", "--num_samples", "2", "--batch_size", "1", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 0, err
    assert (tmp_path / "o" / "samples_2x16x16x3.npz").exists()


def test_timestep_respacing_without_use_ddim_runs_ddpm(tiny_model, monkeypatch, tmp_path, capsys):
    """improved-diffusion runs its respaced DDPM sampler unless --use_ddim True."""
    from difforge.pipeline import core

    used = []
    real = core.get_sampler
    monkeypatch.setattr(core, "get_sampler", lambda name: used.append(name) or real(name))
    for extra, want in ([[], "ddpm"], [["--use_ddim", "True"], "ddim"], [["--use_ddim", "False"], "ddpm"]):
        rc, _, err = _run(["sample", "--model_path", str(tiny_model), "--timestep_respacing", "4", *extra, "--num_samples", "1",
                           "--out", str(tmp_path / want), "--quiet"], capsys)
        assert rc == 0, err
        assert used[-1] == want


def test_iddm_generate_lines(tiny_model, tmp_path, capsys):
    rc, out, err = _run(["generate", "--conditional", "True", "--generate_name", "df", "--num_images", "2", "--num_classes", "4",
                         "--class_name", "0", "--image_size", "16", "--weight_path", str(tiny_model), "--result_path", str(tmp_path),
                         "--steps", "3", "--quiet"], capsys)
    assert rc == 0, err
    assert len(list((tmp_path / "df").glob("*.png"))) == 2


def test_dit_sample_line(tiny_model, tmp_path, capsys):
    rc, _, err = _run(["sample", "--model", "unet-tiny", "--image-size", "16", "--ckpt", str(tiny_model), "--seed", "0",
                       "--num-sampling-steps", "3", "--num", "1", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 0, err
    assert list(tmp_path.glob("o-grid_*.png"))  # grids beside the sample folder


@pytest.mark.parametrize("flag,value,file_value", [
    ("--image_size", "32", "16"), ("--conditional", "False", "True"), ("--class_cond", "False", "True"),
    ("--num_classes", "10", "4"), ("--learn_sigma", "True", "False"), ("--diffusion_steps", "4000", "1000"),
    ("--model", "DiT-XL/2", "unet"), ("--num_res_blocks", "3", "1"),
])
def test_a_model_flag_that_contradicts_the_file_is_refused(tiny_model, tmp_path, capsys, flag, value, file_value):
    rc, _, err = _run(["sample", str(tiny_model), flag, value, "--num", "1", "--steps", "2", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 2
    assert flag in err and f"has {file_value}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_flags_without_meaning_here_get_one_note(tiny_model, tmp_path, capsys):
    rc, _, err = _run(["sample", str(tiny_model), "--use_fp16", "True", "--rescale_timesteps", "False", "--num", "1", "--steps", "2",
                       "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 0
    assert err.count("note:") == 1 and "--use_fp16" in err and "--rescale_timesteps" in err


def test_two_model_free_sample_flags(tiny_model, tmp_path, capsys):
    """free_sample.py's --cmodel_path/--ucmodel_path/--w reach two-model guidance (refused here: the
    second model is conditional too, which names the flag's meaning)."""
    rc, _, err = _run(["sample", "--cmodel_path", str(tiny_model), "--ucmodel_path", str(tiny_model), "--w", "3",
                       "--timestep_respacing", "ddim3", "--use_ddim", "True", "--num_samples", "1", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--uncond-model takes an unconditional model" in err


def test_a_torch_checkpoint_names_convert(tmp_path, capsys):
    ckpt = tmp_path / "ckpt_last.pt"
    ckpt.write_bytes(b"not really")
    rc, _, err = _run(["generate", "--weight_path", str(ckpt), "--num_images", "1"], capsys)
    assert rc == 2 and "difforge convert" in err
