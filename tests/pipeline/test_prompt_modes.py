"""Prompts reach every mode: trajectory, interpolation and inpainting of a text model follow the
prompt (the same images as generate for the same seed), through the CLI too."""

import numpy as np
import pytest

from difforge.errors import UserError
from difforge.pipeline import Pipeline
from difforge.train.trainer import Trainer
from tests.conftest import tiny_overrides
from tests.pipeline.clikit import cli


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    return Trainer(progress=False, **tiny_overrides(tmp, text_encoder="builtin", conditional=False, max_steps=3,
                                                    preview_num=1, preview_steps=1)).fit().model_file


A, B = "a large scratch on wood", "a crack at the top on brushed steel"


def test_trajectory_follows_the_prompt(text_model):
    pipe = Pipeline.from_checkpoint(text_model)
    kw = dict(sampler="ddim", steps=3, seed=5)
    traj = pipe.trajectory(num=2, prompt=[A, B], frames=2, **kw)
    gen = pipe.generate(2, prompt=[A, B], **kw)
    assert np.array_equal(traj.final.images.numpy(), gen.images.numpy())
    other = pipe.trajectory(num=2, prompt=[B, A], frames=2, **kw)
    assert not np.array_equal(other.final.images.numpy(), gen.images.numpy())


def test_interpolation_follows_one_prompt(text_model):
    pipe = Pipeline.from_checkpoint(text_model)
    frames = pipe.interpolate(seeds=(3, 4), num_mix=3, prompt=A, sampler="ddim", steps=3)
    first = pipe.generate(1, prompt=A, seeds=[3], sampler="ddim", steps=3)
    assert np.array_equal(frames.frames[0].numpy(), first.images[0].numpy())  # frame 0 is seed A's sample, with the prompt
    plain = pipe.interpolate(seeds=(3, 4), num_mix=3, prompt=B, sampler="ddim", steps=3)
    assert not np.array_equal(plain.frames.numpy(), frames.frames.numpy())
    with pytest.raises(UserError, match="one prompt"):
        pipe.interpolate(seeds=(3, 4), num_mix=3, prompt=[A, B], sampler="ddim", steps=3)


def test_inpainting_follows_the_prompt_and_keeps_the_rest(text_model):
    pipe = Pipeline.from_checkpoint(text_model)
    img = np.full((16, 16, 3), 128, np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:10, 4:10] = True
    kw = dict(method="blend", sampler="ddim", steps=3, seed=1, cfg=3.0)  # 3 training steps: a small text effect, amplified
    a = pipe.inpaint(img, mask, 2, prompt=A, **kw).images.numpy()
    b = pipe.inpaint(img, mask, 2, prompt=B, **kw).images.numpy()
    assert np.array_equal(a[:, ~mask], b[:, ~mask]) and (a[:, ~mask] == 128).all()
    assert not np.array_equal(a[:, mask], b[:, mask])


def test_cli_modes_take_prompts(text_model, tmp_path):
    r = cli("sample", text_model, "--prompt", A, "--num", "1", "--steps", "2", "--trajectory", "--out", tmp_path / "t", "--quiet")
    assert r.returncode == 0, r.stderr
    r = cli("interpolate", text_model, "--prompt", A, "--num-mix", "2", "--steps", "2", "--out", tmp_path / "i")
    assert r.returncode == 0 and "prompt" in r.stdout, r.stderr
    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "img.png")
    m = np.zeros((16, 16), np.uint8)
    m[2:8, 2:8] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    r = cli("inpaint", text_model, "--image", tmp_path / "img.png", "--mask", tmp_path / "mask.png", "--prompt", A, "--num", "1",
            "--method", "blend", "--sampler", "ddim", "--steps", "2", "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "p").glob("*.png"))) >= 1


def test_cli_sample_takes_a_composed_prompt_and_names_an_empty_part(text_model, tmp_path):
    r = cli("sample", text_model, "--prompt", f"{A} AND {B} :-0.5", "--num", "1", "--steps", "2", "--out", tmp_path / "c", "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "c").rglob("*.png"))) >= 1
    r = cli("sample", text_model, "--prompt", f"{A} AND :2", "--num", "1", "--steps", "2", "--out", tmp_path / "e", "--quiet")
    assert r.returncode != 0 and "empty part" in r.stderr and "Traceback" not in r.stderr


def test_cli_place_contrast_changes_a_placed_prompt_and_is_recorded(text_model, tmp_path):
    import json

    def sample(out, *flags):
        r = cli("sample", text_model, "--prompt", B, "--num", "1", "--steps", "2", "--seed", "4", "--out", tmp_path / out, "--quiet", *flags)
        assert r.returncode == 0, r.stderr
        lines = [json.loads(line) for line in (tmp_path / out / "manifest.jsonl").read_text().splitlines()]
        return np.asarray(Image.open(next((tmp_path / out).glob("*.png")))), lines[0]["place_contrast"]

    from PIL import Image

    from difforge.pipeline.config import PLACE_CONTRAST

    (auto, a_auto), (off, a_off), (strong, a_strong) = sample("auto"), sample("off", "--place-contrast", "0"), sample("x", "--place-contrast", "3")
    assert (a_auto, a_off, a_strong) == (PLACE_CONTRAST, 0.0, 3.0)
    assert not np.array_equal(auto, off) and not np.array_equal(strong, auto)  # B names a place: the contrast acts
    r = cli("sample", text_model, "--prompt", B, "--num", "1", "--steps", "2", "--out", tmp_path / "bad", "--place-contrast", "-1")
    assert r.returncode != 0 and "--place-contrast" in r.stderr and "Traceback" not in r.stderr


def test_cli_analogy_is_recorded_and_a_bad_value_refused(text_model, tmp_path):
    import json

    r = cli("sample", text_model, "--prompt", A, "--num", "1", "--steps", "2", "--out", tmp_path / "s", "--quiet", "--analogy", "0.5")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s" / "manifest.jsonl").read_text().splitlines()[0])["analogy"] == 0.5
    for bad in ("2", "lots"):
        r = cli("sample", text_model, "--prompt", A, "--num", "1", "--steps", "2", "--out", tmp_path / "bad", "--analogy", bad)
        assert r.returncode != 0 and "--analogy" in r.stderr and "Traceback" not in r.stderr
