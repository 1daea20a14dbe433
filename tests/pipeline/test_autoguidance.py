"""Autoguidance (Karras et al. 2024): guiding a model by a weaker model of the same classes.

The reference is the formula itself, computed from the two networks by hand: eps = (1 + w) eps_good(y)
- w eps_weak(y); the weak model must get the labels (the null class would be two-model CFG), and
a weak model equal to the good one must give back the good model for every w.
"""

import numpy as np
import pytest
import torch

from tests.conftest import tiny_overrides
from tests.diffusion.test_guidance import SCHEDULE, _tiny_net, _x
from difforge.cli.main import main as cli
from difforge.diffusion.denoiser import Denoiser
from difforge.diffusion.guidance import TwoModelCFG
from difforge.errors import UserError
from difforge.pipeline import Pipeline
from difforge.pipeline.config import AUTOGUIDANCE_W
from difforge.train.trainer import Trainer


def _den(net, classes=3):
    return Denoiser(net, SCHEDULE, num_classes=classes, cfg_scale=1.0, clip_x0=False)


def test_the_weak_model_gets_the_labels_and_the_formula_holds():
    good, weak = _tiny_net(3, 3), _tiny_net(4, 3)
    x, t, y, w = _x(3, seed=5, shape=(1, 8, 8)), torch.tensor([30, 400, 800]), torch.tensor([2, 0, 1]), 0.8
    out = TwoModelCFG(_den(good), _den(weak), w, guide_labels=True)(x, t, y)
    ref = (1 + w) * good(x, t, y) - w * weak(x, t, y)
    torch.testing.assert_close(out.eps, ref, rtol=1e-5, atol=1e-5, check_dtype=False)  # float32 outputs
    null = (1 + w) * good(x, t, y) - w * weak(x, t, torch.full_like(y, 3))
    assert (out.eps - null).abs().max() > 1e-3  # the null class would be another guidance
    same = TwoModelCFG(_den(good), _den(good), 2.5, guide_labels=True)(x, t, y)
    torch.testing.assert_close(same.eps, good(x, t, y), rtol=1e-5, atol=1e-5, check_dtype=False)


def test_inside_an_interval_each_guided_image_keeps_its_own_label():
    good, weak = _tiny_net(3, 3), _tiny_net(4, 3)
    x, t, y, w = _x(3, seed=6, shape=(1, 8, 8)), torch.tensor([30, 400, 800]), torch.tensor([2, 0, 1]), 1.5
    ab = SCHEDULE.alphas_cumprod[t].double()
    sigma = ((1 - ab) / ab).sqrt()
    interval = (float(sigma[0] + sigma[1]) / 2, float(sigma[1] + sigma[2]) / 2)  # only t = 400 inside
    out = TwoModelCFG(_den(good), _den(weak), w, guide_labels=True, cfg_interval=interval)(x, t, y)
    ref = good(x, t, y)
    ref[1] = (1 + w) * ref[1] - w * weak(x[1:2], t[1:2], y[1:2])[0]
    torch.testing.assert_close(out.eps, ref, rtol=1e-5, atol=1e-5, check_dtype=False)


@pytest.fixture(scope="module")
def weak_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autoguidance")
    train = lambda run, **kw: Trainer(progress=False, **tiny_overrides(tmp, run=run, **kw)).fit().model_file  # noqa: E731
    return {"weak": train("weak", max_steps=3), "uncond": train("uncond", max_steps=4, conditional=False),
            "uncond_weak": train("uncond_weak", max_steps=2, conditional=False)}


KW = dict(num=2, class_label="all", steps=4, seed=3)


def test_pipeline_autoguidance_of_a_conditional_and_an_unconditional_model(tiny_model, weak_files):
    pipe = Pipeline.from_checkpoint(tiny_model)
    plain = pipe.generate(**KW, cfg=1.0)
    itself = pipe.generate(**KW, cfg=3.0, guide_model=tiny_model)  # guided by itself: nothing changes
    assert np.abs(plain.images.numpy().astype(int) - itself.images.numpy().astype(int)).max() <= 1
    guided = pipe.generate(**KW, cfg=1.0, guide_model=weak_files["weak"])
    assert guided.labels.tolist() == plain.labels.tolist() and not torch.equal(guided.images, plain.images)
    assert pipe.with_guidance(guide_model=weak_files["weak"]).default_cfg == AUTOGUIDANCE_W != pipe.default_cfg
    u = Pipeline.from_checkpoint(weak_files["uncond"])
    base, auto = u.generate(num=2, steps=4, seed=3), u.generate(num=2, steps=4, seed=3, cfg=1.0, guide_model=weak_files["uncond_weak"])
    assert auto.images.shape == base.images.shape and not torch.equal(auto.images, base.images)


def test_mismatched_guide_models_are_one_line_errors(tiny_model, weak_files):
    pipe = Pipeline.from_checkpoint(tiny_model)
    with pytest.raises(UserError, match="autoguidance needs a weaker model of the same classes"):
        pipe.generate(**KW, guide_model=weak_files["uncond"])
    with pytest.raises(UserError, match="not both"):
        pipe.generate(**KW, guide_model=weak_files["weak"], uncond_model=weak_files["uncond"])


def test_cli_guide_model(tmp_path, tiny_model, weak_files, capsys):
    out = tmp_path / "s"
    rc = cli(["sample", str(tiny_model), "--guide-model", str(weak_files["weak"]), "--cfg", "1", "--num", "1", "--class", "all",
              "--steps", "3", "--out", str(out), "--quiet"])
    assert rc == 0 and len(list(out.glob("*.png"))) == 4
    assert '"cfg": 1.0' in (out / "manifest.jsonl").read_text()
    rc = cli(["sample", str(tiny_model), "--guide-model", str(weak_files["weak"]), "--num", "1", "--steps", "3", "--out", str(tmp_path / "d"), "--quiet"])
    assert rc == 0 and f'"cfg": {AUTOGUIDANCE_W}' in (tmp_path / "d" / "manifest.jsonl").read_text()  # the default w, recorded
    capsys.readouterr()
    rc = cli(["sample", str(tiny_model), "--guide-model", str(weak_files["uncond"]), "--num", "1", "--steps", "2", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "same classes" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
