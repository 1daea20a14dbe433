"""SampleConfig: one place for the sampling defaults, checked values, and the batch core behind every mode."""

import math
import re
from pathlib import Path

import pytest
import torch

from difforge.cli.main import main
from difforge.errors import UserError
from difforge.pipeline import Pipeline, SampleConfig

PACKAGE = Path(__file__).resolve().parents[2] / "difforge"


def test_split_separates_fields_from_sampler_options():
    config, opts = SampleConfig.split(None, sampler="ddpm", steps=7, variance="fixed_large", eta=0.5)
    assert (config.sampler, config.steps, config.eta) == ("ddpm", 7, 0.5)
    assert opts == {"variance": "fixed_large", "eta": 0.5}  # eta reaches the sampler only when given
    config, opts = SampleConfig.split(SampleConfig(cfg=2.0))
    assert config.cfg == 2.0 and opts == {}


@pytest.mark.parametrize("field,value", [("cfg", math.nan), ("cfg", math.inf), ("cfg_rescale", 5.0), ("eta", -1.0),
                                         ("threshold", 1.5), ("batch_size", 0), ("steps", 0), ("steps", -3)])
def test_check_names_the_field(field, value):
    with pytest.raises(UserError, match=field):
        SampleConfig().replace(**{field: value}).check()


def test_the_default_guidance_scale_is_the_models_measured_one(tiny_model):
    """cfg None: 1.5 below 64 px, 2 from 64 px (the sweeps in pipeline/config.py); the images equal those of
    the explicit scale and differ from unguided ones; with an unconditional model the same strength, w = s - 1."""
    from difforge.pipeline.config import default_cfg
    from difforge.pipeline.guidance import Guide

    assert (default_cfg(16), default_cfg(32), default_cfg(63), default_cfg(64), default_cfg(256)) == (1.5, 1.5, 1.5, 2.0, 2.0)
    pipe = Pipeline.from_checkpoint(tiny_model)
    assert SampleConfig().cfg is None and pipe.default_cfg == default_cfg(pipe.image_size) == 1.5
    assert pipe.describe()["default_cfg"] == 1.5  # difforge info shows it
    kw = dict(num=2, class_label=0, steps=3, seed=4)
    assert torch.equal(pipe.generate(**kw).images, pipe.generate(cfg=1.5, **kw).images)
    assert not torch.equal(pipe.generate(**kw).images, pipe.generate(cfg=1.0, **kw).images)
    big = Pipeline(pipe.net, dict(pipe.meta, data=dict(pipe.meta["data"], image_size=64)), pipe.device)
    assert big.default_cfg == 2.0 and big.denoiser().cfg_scale == 2.0
    two = Pipeline(pipe.net, pipe.meta, pipe.device, guide=Guide(uncond=pipe))
    assert two.default_cfg == 0.5 and two.with_default_cfg(SampleConfig(cfg=3.0)).cfg == 3.0  # (1 + w) eps_c - w eps_u


def test_steps_zero_is_an_error_not_every_step(tiny_model, capsys, tmp_path):
    rc = main(["sample", str(tiny_model), "--steps", "0", "--num", "1", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "steps" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_generate_equals_the_batch_core(tiny_model):
    """generate is a thin function over sample(): same seeds and labels give the same pixels."""
    pipe = Pipeline.from_checkpoint(tiny_model)
    config = SampleConfig(steps=3, batch_size=3)
    out = pipe.generate(num=4, class_label="crack", config=config, seed=5)
    labels = torch.full((4,), pipe.class_names.index("crack"))
    x = pipe.sample([5, 6, 7, 8], labels, config)
    assert torch.equal(out.images, (x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)).permute(0, 2, 3, 1))


def test_keywords_and_config_give_the_same_images(tiny_model):
    pipe = Pipeline.from_checkpoint(tiny_model)
    a = pipe.generate(num=2, class_label=0, config=SampleConfig(sampler="dpm++2m", steps=4, cfg=2.0))
    b = pipe.generate(num=2, class_label=0, sampler="dpm++2m", steps=4, cfg=2.0)
    assert torch.equal(a.images, b.images)


def test_sampling_defaults_are_written_once():
    """No module but pipeline/config.py spells the default sampler, steps or CFG scale as a literal default."""
    patterns = [r"cfg\w*\s*[:=][^=\n]*\b3\.0\b", r"steps\w*\s*[:=][^=\n]*\b50\b",
                r"sampler\w*\s*[:=][^=\n]*[\"']ddim[\"']"]
    hits = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "config.py" and path.parent.name == "pipeline":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            if any(re.search(p, line) for p in patterns):
                hits.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert hits == []
