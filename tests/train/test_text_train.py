"""A short text-conditioned run on the built-in captions: the loss falls, the model file carries
the vocabulary, `sample --prompt` writes images; a model without text refuses --prompt."""

import csv

import pytest

from difforge.modelfile import read_metadata
from difforge.train.trainer import Trainer
from tests.conftest import TINY_NET, tiny_overrides
from tests.pipeline.clikit import cli, one_line_error


def test_builtin_text_run_learns_and_samples_from_a_prompt(tmp_path):
    result = Trainer(progress=False, **tiny_overrides(tmp_path, text_encoder="builtin", conditional=False, max_steps=40,
                                                      preview_num=2, preview_steps=2)).fit()
    with open(result.run_dir / "metrics.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")]
    assert len(losses) == 40 and sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5
    meta = read_metadata(result.model_file)
    assert meta["text"]["encoder"] == "builtin" and "scratch" in meta["text"]["vocab"]
    assert meta["network"]["config"]["context_dim"] == 128 and not meta["data"]["class_names"]
    assert meta["network"]["config"]["text_layout"] == 4  # a new built-in text run draws the layout map (TEXT_LAYOUT)
    templates = meta["text"]["templates"]  # its captions with their place marked (pipeline/places.py)
    assert templates and all(t.count("{place}") == 1 and not {"top", "centre", "left"} & set(t.split()) for t in templates)
    assert "text_layout: 4" in (result.run_dir / "config.yaml").read_text()  # recorded: a resume builds the same network
    assert meta["network"]["config"]["text_encoder"]["depth"] == 1  # TEXT_DEPTH, and recorded as well:
    from difforge.config import Config

    assert Config.load(result.run_dir / "config.yaml").model.network_options["text_encoder"] == {"depth": 1}

    out = tmp_path / "s"
    res = cli("sample", result.model_file, "--prompt", "a large scratch on wood", "--prompt", "a crack at the top on brushed steel",
              "--num", "2", "--steps", "2", "--out", out, "--quiet", "--mode", "text")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["p0_00000.png", "p0_00001.png", "p1_00002.png", "p1_00003.png"]
    import json

    from difforge.pipeline.config import TEXT_CFG

    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert TEXT_CFG != 1.5 and {line["cfg"] for line in lines} == {TEXT_CFG}
    assert all(line["cfg_interval"] == [0.1, None] for line in lines)  # the text model's own interval, resolved (config.py)
    from difforge.pipeline.config import PLACE_CONTRAST

    assert all(line["place_contrast"] == PLACE_CONTRAST and line["analogy"] == 1.0 for line in lines)  # recorded: places.py, analogy.py

    from PIL import Image

    from benchmarks import prompt_grid

    prompt_grid.main([str(result.model_file), "--out", str(tmp_path / "grid.png"), "--steps", "2", "--analogy-off-rows"])
    w, h = Image.open(tmp_path / "grid.png").size
    assert w > prompt_grid.LABEL_W + 9 * 16 * prompt_grid.ZOOM and h > 8 * 16 * prompt_grid.ZOOM  # 9 positions x (6 + 2) prompts


def test_the_text_defaults_are_for_new_builtin_runs_only(tmp_path):
    """New built-in text runs on a UNet get the layout map and TEXT_DEPTH encoder layers; an explicit choice, a CLIP run, a network
    without the option, a run without text and a resume (settle_run new=False) are left as they are;
    a fine-tune takes its file's value."""
    import types

    import torch

    from difforge.config import Config
    from difforge.data.source import TrainingImages
    from difforge.train.settle import settle_run
    from difforge.train.autonet import TEXT_DEPTH, TEXT_LAYOUT, choose_text_defaults

    def layout(cfg, **k):
        return choose_text_defaults(cfg, **k).model.network_options.get("text_layout")

    def depth(cfg, **k):
        return (choose_text_defaults(cfg, **k).model.network_options.get("text_encoder") or {}).get("depth")

    text = Config().override(text_encoder="builtin", conditional=False)
    assert layout(text) == TEXT_LAYOUT == 4
    assert layout(text.override(network="auto")) == TEXT_LAYOUT
    assert layout(text.override(network_options={"text_layout": 0})) == 0
    assert depth(text) == TEXT_DEPTH == 1 and depth(text.override(network_options={"text_layout": 0})) == 1
    assert depth(text.override(network_options={"text_encoder": {"depth": 3}})) == 3
    assert choose_text_defaults(text.override(network_options={"text_encoder": {"dim": 64}})).model.network_options["text_encoder"] == \
        {"dim": 64, "depth": 1}  # the other options kept
    assert depth(text.override(network="dit")) is None and depth(Config()) is None
    assert layout(text.override(text_encoder=str(tmp_path))) is None  # CLIP: not measured
    assert layout(text.override(network="dit")) is None
    assert layout(Config()) is None
    data = TrainingImages(torch.zeros(24, 3, 8, 8, dtype=torch.uint8), None, [], "x")  # a stand-in (mask_weight=0: no built-in masks)
    ns = types.SimpleNamespace()
    assert settle_run(text.override(channels=3, image_size=8, mask_weight=0), data, ns)[0].model.network_options.get("text_layout") == 4
    # a joint image+mask text run too (without them it placed nothing: seen position 0.25 against 0.88, README)
    assert settle_run(text.override(channels=3, image_size=8, mask_weight=0, task="joint"), data, ns)[0].model.network_options == \
        {"text_layout": TEXT_LAYOUT, "text_encoder": {"depth": TEXT_DEPTH}}
    resumed = settle_run(text.override(channels=3, image_size=8, mask_weight=0), data, ns, new=False)[0].model.network_options
    assert "text_layout" not in resumed and "text_encoder" not in resumed  # a resume builds what config.yaml says
    old = Trainer(progress=False, **tiny_overrides(tmp_path, text_encoder="builtin", conditional=False, max_steps=1,
                                                   network_options={**TINY_NET, "text_layout": 0, "text_encoder": {"depth": 0}},
                                                   preview_num=1, preview_steps=1)).fit()
    assert layout(text, pretrain=str(old.model_file)) == 0 and depth(text, pretrain=str(old.model_file)) == 0


def test_a_model_without_text_refuses_prompts(tiny_model, tmp_path):
    one_line_error(cli("sample", tiny_model, "--prompt", "a scratch", "--num", "1", "--steps", "1", "--out", tmp_path / "s"),
                   "no text encoder", "--text-encoder")



def test_prompt_flags(tmp_path):
    import argparse

    import pytest

    from difforge.cli._prompts import prompt_kwargs
    from difforge.errors import UserError

    args = argparse.Namespace(prompt=["a", "b"], prompts_file=None, negative_prompt="c", mode="text")
    assert prompt_kwargs(args) == {"prompt": ["a", "b"], "negative_prompt": "c"}
    f = tmp_path / "p.txt"
    f.write_text("\ufeffa crack on wood\n\n  ひび割れ  \n", encoding="utf-8")
    args = argparse.Namespace(prompt=["a"], prompts_file=str(f), negative_prompt=None, mode=None)
    assert prompt_kwargs(args) == {"prompt": ["a", "a crack on wood", "ひび割れ"]}
    with pytest.raises(UserError, match="--mode text needs"):
        prompt_kwargs(argparse.Namespace(prompt=None, prompts_file=None, negative_prompt=None, mode="text"))


def test_text_runs_keep_every_image_for_training():
    """The held-out EMA choice has no captions: a text run does not hold images out (captions stay aligned)."""
    import types

    import torch

    from difforge.config import Config
    from difforge.data.source import TrainingImages
    from difforge.train.settle import settle_run

    data = TrainingImages(torch.zeros(400, 3, 8, 8, dtype=torch.uint8), None, [], "x")
    cfg = Config().override(channels=3)
    assert settle_run(cfg, data, types.SimpleNamespace())[2] is not None  # the check can fail: plain runs hold out
    kept, val = settle_run(cfg.override(text_encoder="builtin", mask_weight=0), data, types.SimpleNamespace())[1:]  # a stand-in: no built-in masks
    assert val is None and len(kept.images) == 400


def test_word_dropout_leaves_words_out_keeps_the_start_token_and_is_reproducible():
    import torch

    from difforge.models.text_encoder import BOS, PAD
    from difforge.train.batches import Batch
    from difforge.train.rng import StepRNG
    from difforge.train.text_cond import TextConditioning, condition, drop_words

    ids = torch.tensor([[BOS, 5, 6, 7, PAD], [BOS, 8, PAD, PAD, PAD]])
    assert torch.equal(drop_words(ids, torch.ones_like(ids, dtype=torch.bool)), torch.tensor([[BOS, PAD, PAD, PAD, PAD], [BOS] + [PAD] * 4]))
    assert torch.equal(drop_words(ids, torch.zeros_like(ids, dtype=torch.bool)), ids)

    caps = [f"a {d} on {m} at the {p}" for d in ("scratch", "crack") for m in ("wood", "steel") for p in ("top", "left")] * 4
    from difforge.models.text_encoder import WordTokenizer

    text = TextConditioning(caps, "builtin", tokenizer=WordTokenizer.build(caps, 12), labels=None)
    batch = Batch(x=torch.zeros(32, 1, 4, 4), labels=None, index=torch.arange(32))
    plain = condition(text, batch, StepRNG.for_step(0, 3, 32), 0.0, 0, "cpu")[1]["context"]
    assert torch.equal(plain, text.ids[:32])
    a = condition(text, batch, StepRNG.for_step(0, 3, 32), 0.0, 0, "cpu", word_dropout=0.5)[1]["context"]
    b = condition(text, batch, StepRNG.for_step(0, 3, 32), 0.0, 0, "cpu", word_dropout=0.5)[1]["context"]
    words = plain > BOS
    assert torch.equal(a, b) and bool((a[:, 0] == BOS).all())  # the step's draws: the same on a resume
    gone = (a == PAD) & words
    assert 0.35 < gone.sum() / words.sum() < 0.65 and torch.equal(a[~gone], plain[~gone])


def test_phrase_dropout_leaves_whole_phrases_out_closes_up_and_spares_dropped_captions():
    import torch

    from difforge.models.text_encoder import BOS, PAD, WordTokenizer
    from difforge.train.batches import Batch
    from difforge.train.rng import StepRNG
    from difforge.train.text_cond import TextConditioning, condition

    caps = [f"a {d} at the {p} on {m}" for d in ("scratch", "crack") for m in ("wood", "steel") for p in ("top left", "left")] * 8
    tok = WordTokenizer.build(caps, 12)
    text = TextConditioning(caps, "builtin", tokenizer=tok, labels=None)
    # the reference: the caption rebuilt from the phrases that were kept, tokenised from scratch
    phrases_of = [["a scratch", "at the top left", "on wood"]]
    dropped = torch.tensor([[False, True, False, False]])
    assert torch.equal(text.without_phrases(torch.tensor([0]), dropped), tok.encode(["a scratch on wood"]))
    assert torch.equal(text.without_phrases(torch.tensor([0]), torch.zeros(1, 4, dtype=torch.bool)), tok.encode([caps[0]]))
    assert torch.equal(text.without_phrases(torch.tensor([0]), torch.ones(1, 4, dtype=torch.bool)), tok.encode([""]))
    assert torch.equal(text.without_phrases(torch.tensor([0]), torch.tensor([[True]])), tok.encode(["at the top left on wood"]))
    assert phrases_of[0] == __import__("difforge.models.text_encoder", fromlist=["phrases"]).phrases(caps[0])

    batch = Batch(x=torch.zeros(64, 1, 4, 4), labels=None, index=torch.arange(64))
    a = condition(text, batch, StepRNG.for_step(0, 5, 64), 0.0, 0, "cpu", phrase_dropout=0.5)[1]["context"]
    b = condition(text, batch, StepRNG.for_step(0, 5, 64), 0.0, 0, "cpu", phrase_dropout=0.5)[1]["context"]
    assert torch.equal(a, b) and bool((a[:, 0] == BOS).all())  # the step's draws: the same on a resume
    decoded = [tok.decode(row) for row in a]
    full = sum(d == " ".join(c.split()) for d, c in zip(decoded, caps))
    assert 1 <= full <= 17  # 64 x 0.5^3 = 8 kept whole on average (sd 2.6)
    for d, c in zip(decoded, caps):  # what is left is the caption's phrases, in order, each whole
        parts = __import__("difforge.models.text_encoder", fromlist=["phrases"]).phrases(c)
        assert any(d == " ".join(p for p, k in zip(parts, keep) if k) for keep in __import__("itertools").product((0, 1), repeat=3))
    # a dropped caption stays empty (it trains the unconditional branch), whatever its phrases drew
    empty = condition(text, batch, StepRNG.for_step(0, 5, 64), 0.999999, 0, "cpu", phrase_dropout=0.5)[1]["context"]
    assert bool((empty[:, 1:] == PAD).all())


@pytest.mark.parametrize("flag", ["word_dropout", "phrase_dropout"])
def test_word_and_phrase_dropout_are_refused_with_a_clip_encoder(tmp_path, flag):
    from difforge.errors import ConfigError

    # refused before the folder is read: a CLIP encoder's captions are embedded once, whole
    with pytest.raises(ConfigError, match=f"{flag} needs the built-in text encoder.*--{flag.replace('_', '-')}"):
        Trainer(progress=False, **tiny_overrides(tmp_path, text_encoder=str(tmp_path / "clip"), conditional=False, max_steps=1,
                                                 **{flag: 0.2})).fit()


def test_builtin_encoder_options_come_from_the_text_encoder_network_option(tmp_path):
    from difforge.config import Config
    from difforge.errors import ConfigError
    from difforge.train.text_cond import ENCODER_DEFAULTS, encoder_options

    base = Config().override(text_encoder="builtin")
    assert encoder_options(base) == ENCODER_DEFAULTS
    assert encoder_options(base.override(network_options={"text_encoder": {"depth": 0}})) == dict(ENCODER_DEFAULTS, depth=0)
    with pytest.raises(ConfigError, match="depht.*takes an object of depth, dim"):
        encoder_options(base.override(network_options={"text_encoder": {"depht": 0}}))
    with pytest.raises(ConfigError, match="vocab_size"):  # the captions' vocabulary decides it
        encoder_options(base.override(network_options={"text_encoder": {"vocab_size": 9}}))
    with pytest.raises(ConfigError, match="CLIP"):
        encoder_options(base.override(text_encoder=str(tmp_path), network_options={"text_encoder": {"depth": 0}}))
    # a run builds, records and reloads the encoder it was asked for
    kw = tiny_overrides(tmp_path, text_encoder="builtin", conditional=False, max_steps=1, preview_num=1, preview_steps=1)
    kw["network_options"] = dict(kw.get("network_options", {}), text_encoder={"depth": 0})
    result = Trainer(progress=False, **kw).fit()
    assert read_metadata(result.model_file)["network"]["config"]["text_encoder"]["depth"] == 0
    from difforge.pipeline import Pipeline

    assert len(Pipeline.from_checkpoint(result.model_file, device="cpu").net.text_encoder.layers) == 0


def test_a_run_that_did_not_record_its_encoder_depth_resumes_with_the_two_layers_it_was_built_with(tmp_path):
    """Runs from before TEXT_DEPTH wrote no ``text_encoder`` into config.yaml and were built with
    ENCODER_DEFAULTS' 2 layers: a resume must build 2 again (its checkpoint has the second layer)."""
    import yaml

    from difforge.train.text_cond import ENCODER_DEFAULTS

    r = Trainer(progress=False, **tiny_overrides(tmp_path, text_encoder="builtin", conditional=False, max_steps=1,
                                                 network_options={**TINY_NET, "text_encoder": {"depth": 2}},
                                                 preview_num=1, preview_steps=1)).fit()
    cfg_file = r.run_dir / "config.yaml"
    raw = yaml.safe_load(cfg_file.read_text())
    assert raw["model"]["network_options"].pop("text_encoder") == {"depth": 2}  # as an older difforge wrote it
    cfg_file.write_text(yaml.safe_dump(raw))
    assert ENCODER_DEFAULTS["depth"] == 2
    resumed = Trainer(progress=False, resume=str(r.run_dir), max_steps=2).fit()
    assert resumed.steps == 2 and read_metadata(resumed.model_file)["network"]["config"]["text_encoder"]["depth"] == 2
