"""The classifier task on the shared loop, and guidance from its file through the pipeline and the CLI."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_overrides
from difforge.cli.main import main as cli
from difforge.config import Config
from difforge.errors import CheckpointError, ConfigError, UserError
from difforge.pipeline import Pipeline
from difforge.modelfile import read_metadata
from difforge.train.batches import Batch
from difforge.train.rng import StepRNG
from difforge.train.noise_shift import shift_for_size
from difforge.train.tasks.classifier import ClassifierTask, bucket_edges, bucket_names
from difforge.train.distributed import DistInfo
from difforge.train.trainer import Trainer

CLF = dict(task="classifier", network="classifier-tiny", network_options={"num_channels": 16, "channel_mult": [1, 2], "num_head_channels": 16})


def _train(tmp_path, run, **kw):
    return Trainer(progress=False, **tiny_overrides(tmp_path, run=run, **kw)).fit().model_file


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model):
    """A noisy classifier of the tiny model's schedule, one of another T, and an unconditional model."""
    tmp = tmp_path_factory.mktemp("guidance")
    return {
        "model": tiny_model,
        "clf": _train(tmp, "clf", max_steps=6, **CLF),
        "clf_t100": _train(tmp, "clf100", max_steps=1, diffusion_steps=100, **CLF),
        "uncond": _train(tmp, "uncond", max_steps=3, conditional=False),
    }


def test_buckets_cover_every_timestep_once():
    e = bucket_edges(1000)
    assert e == [0, 250, 500, 750, 1000]
    assert bucket_names(1000)[0] == "acc_t0-249" and bucket_names(1000)[-1] == "acc_t750-999"
    assert bucket_edges(10, 4)[-1] == 10 and len(set(bucket_edges(10, 4))) == 5


def test_loss_is_cross_entropy_on_q_sample_of_the_schedule():
    cfg = Config().override(**{k: v for k, v in CLF.items()}, image_size=16, diffusion_steps=200, noise_schedule="cosine",
                              noise_shift=1.0)
    task = ClassifierTask(cfg, DistInfo())

    class Data:
        images = torch.zeros(8, 3, 16, 16, dtype=torch.uint8)
        labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
        class_names = ["a", "b", "c", "d"]
        num_classes = 4
        source = "test"

    task.check_data(Data)
    net = task.build(Data, torch.device("cpu"))
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    mine = slice(2, 6)  # this rank's part of a global batch of 8
    terms = task.loss(net, Batch(x[mine], Data.labels), StepRNG(torch.Generator().manual_seed(5), 8, mine))
    # reference: the same draws, the schedule's alpha_bar from its betas, x_t by hand
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 200, (8,), generator=g)[mine]
    noise = torch.randn((8, 3, 16, 16), generator=g)[mine]
    s = torch.arange(201, dtype=torch.float64) / 200
    ab_cont = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    ab = torch.cumprod(1 - (1 - ab_cont[1:] / ab_cont[:-1]).clamp(max=0.999), 0)[t].float().reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x[mine] + (1 - ab).sqrt() * noise
    logits = net(x_t, t)
    ref = F.cross_entropy(logits, Data.labels[mine], reduction="none")
    torch.testing.assert_close(terms["loss"], ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(terms["train_acc"], (logits.argmax(1) == Data.labels[mine]).float())


def test_training_writes_accuracy_by_noise_level_and_a_self_describing_file(files):
    meta = read_metadata(files["clf"])
    assert meta["kind"] == "classifier"
    # the diffusion defaults of a 16 px model: the classifier sees the noise levels of the model it will guide
    assert meta["diffusion"] == {"noise_schedule": "cosine", "diffusion_steps": 1000, "noise_shift": shift_for_size(16)}
    assert meta["data"]["class_names"] == ["scratch", "inclusion", "crack", "patch"]
    assert set(bucket_names(1000)) <= set(meta["classifier"]["accuracy"])
    header = (files["clf"].parent.parent / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"acc", "val_loss", *bucket_names(1000)} <= set(header)
    log = (files["clf"].parent.parent / "train.log").read_text() if (files["clf"].parent.parent / "train.log").exists() else ""
    assert not log or "accuracy by noise level" in log
    with pytest.raises(CheckpointError, match="classifier model file, not a diffusion model"):
        Pipeline.from_checkpoint(files["clf"])


def test_task_refuses_data_or_networks_it_cannot_use(tmp_path):
    with pytest.raises(ConfigError, match="at least two classes"):
        Trainer(progress=False, **tiny_overrides(tmp_path, **CLF, conditional=False)).fit()
    with pytest.raises(ConfigError, match="network must be one of classifier"):
        Trainer(progress=False, **tiny_overrides(tmp_path, **dict(CLF, network="adm-small"))).fit()


# -- guidance through the pipeline ----------------------------------------------------------------

KW = dict(num=2, class_label="crack", steps=4, seed=3)


def test_classifier_scale_zero_is_the_plain_model_and_scale_changes_images(files):
    pipe = Pipeline.from_checkpoint(files["model"])
    plain = pipe.generate(**KW, cfg=1.0)
    zero = pipe.generate(**KW, cfg=1.0, classifier=files["clf"], classifier_scale=0.0)
    assert torch.equal(plain.images, zero.images)
    for sampler in ("ddim", "ddpm", "euler"):  # eps shift, the ddpm mean shift, fractional (Karras) t
        guided = pipe.generate(**dict(KW, steps=4), cfg=1.0, sampler=sampler, classifier=files["clf"], classifier_scale=50.0)
        base = pipe.generate(**dict(KW, steps=4), cfg=1.0, sampler=sampler)
        assert (guided.images.int() - base.images.int()).abs().max() > 0, sampler
    traj = pipe.trajectory(**KW, frames=2, classifier=files["clf"], classifier_scale=2.0)
    assert traj.xt.shape[0] == 2


def test_two_model_cfg_with_w_zero_is_the_conditional_model(files):
    pipe = Pipeline.from_checkpoint(files["model"])
    cond = pipe.generate(**KW, cfg=1.0)
    two = pipe.generate(**KW, cfg=0.0, uncond_model=files["uncond"])
    assert np.abs(cond.images.numpy().astype(int) - two.images.numpy().astype(int)).max() <= 1  # float rounding
    w2 = pipe.generate(**KW, cfg=2.0, uncond_model=files["uncond"])
    assert not torch.equal(w2.images, cond.images)


def test_unconditional_model_takes_the_classifiers_classes(files):
    u = Pipeline.from_checkpoint(files["uncond"])
    out = u.generate(num=1, class_label="all", steps=3, classifier=files["clf"], classifier_scale=1.0)
    assert out.class_names == ["scratch", "inclusion", "crack", "patch"] and out.labels.tolist() == [0, 1, 2, 3]
    with pytest.raises(UserError, match="unconditional; leave out --class"):
        u.generate(num=1, class_label="crack", steps=3)


def test_mismatched_files_are_one_line_errors(files):
    pipe = Pipeline.from_checkpoint(files["model"])
    with pytest.raises(UserError, match="T=100 but .* T=1000.*--diffusion-steps 1000"):
        pipe.generate(**KW, classifier=files["clf_t100"])
    with pytest.raises(UserError, match="not a noisy classifier"):
        pipe.generate(**KW, classifier=files["model"])
    with pytest.raises(UserError, match="--uncond-model takes an unconditional model"):
        pipe.generate(**KW, uncond_model=files["model"])
    with pytest.raises(UserError, match="needs a class-conditional main model"):
        Pipeline.from_checkpoint(files["uncond"]).generate(num=1, steps=2, uncond_model=files["uncond"])
    meta = dict(read_metadata(files["clf"]))
    net = torch.nn.Identity()
    bad = dict(meta, data=dict(meta["data"], class_names=["a", "b", "c", "d"]))
    with pytest.raises(UserError, match="same classes in the same order"):
        pipe.generate(**KW, classifier=(net, bad))
    bad = dict(meta, data=dict(meta["data"], image_size=32))
    with pytest.raises(UserError, match="classifies 32px images"):
        pipe.generate(**KW, classifier=(net, bad))
    bad = dict(meta, diffusion=dict(meta["diffusion"], noise_shift=2.0))  # same schedule and T, other noise levels
    with pytest.raises(UserError, match=f"noise shift 2 with T=1000 but .* --noise-shift {shift_for_size(16):g}$"):
        pipe.generate(**KW, classifier=(net, bad))


# -- the CLI ----------------------------------------------------------------------------------------

def test_cli_train_classifier_then_sample_with_guidance(tmp_path, files, capsys):
    rc = cli(["train-classifier", "--runs-dir", str(tmp_path / "runs"), "--run", "c", "--image-size", "16", "--builtin-per-class", "4",
              "--network", "classifier-tiny", "--classifier_width", "16", "--network-option", "num_head_channels=16",
              "--iterations", "2", "--batch-size", "8", "--precision", "fp32", "--quiet"])
    assert rc == 0
    clf = tmp_path / "runs" / "c" / "checkpoints" / "ema.safetensors"
    assert read_metadata(clf)["network"]["config"]["num_channels"] == 16
    out = tmp_path / "s"
    rc = cli(["sample", str(files["model"]), "--classifier_path", str(clf), "--classifier_scale", "3", "--uncond-model", str(files["uncond"]),
              "--cfg", "1", "--num", "1", "--class", "all", "--steps", "3", "--out", str(out), "--quiet"])
    assert rc == 0 and len(list(out.glob("*.png"))) == 4
    capsys.readouterr()
    rc = cli(["sample", str(files["model"]), "--classifier", str(files["clf_t100"]), "--num", "1", "--steps", "2", "--out", str(out), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "T=100" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
