"""Text conditioning in the networks: tokenizer round trip, cross-attention against a plain
reference, the shape contract of every network family with text, and the pipeline's prompt
rows: the empty caption is the unconditional branch and CFG with text runs as one forward."""

import math

import pytest
import torch

from difforge.models import registry
from difforge.models.layers import CrossAttention, CrossAttention2d, position_features
from difforge.models.text_encoder import BOS, PAD, UNK, WordTokenizer, words

from .netkit import perturb

TEXT = dict(vocab_size=12, dim=16, depth=1, heads=2, max_length=8)
FAMILIES = {
    "unet-tiny": dict(base_channels=16, channel_mult=[1, 2], attention_resolutions=[4], head_channels=8),
    "adm": dict(num_channels=16, channel_mult=[1, 2], attention_resolutions=[4], num_head_channels=8),
    "dit": dict(hidden_size=32, depth=2, num_heads=2, patch_size=4),
}


def test_tokenizer_round_trip_and_specials():
    caps = ["A large scratch, on brushed steel", "Rost auf Stahl", "ひび割れ 左上", "a small crack"]
    tok = WordTokenizer.build(caps, max_length=8)
    ids = tok.encode(caps + ["", "a purple scratch"])
    assert ids.shape == (6, 8) and bool((ids[:, 0] == BOS).all())
    for c, row in zip(caps, ids):
        assert tok.decode(row) == " ".join(words(c))
    assert ids[4, 1:].eq(PAD).all()  # the empty caption is the start token alone
    assert ids[5, 2].item() == UNK and tok.unknown("a purple scratch") == ["purple"]
    assert tok.encode(["a " * 20])[0].ne(PAD).sum() == 8  # cut at max_length
    again = WordTokenizer(tok.vocab, 8)  # what a model file stores: the word list
    assert torch.equal(again.encode(caps), ids[:4])


@pytest.mark.parametrize("caption, expected", [
    ("a large diagonal scratch at the top left on brushed steel", ["a large diagonal scratch", "at the top left", "on brushed steel"]),
    ("Long thin scratch, diagonal; near the TOP edge: on steel", ["long thin scratch", "diagonal", "near the top edge", "on steel"]),
    ("a clean wooden surface without defects", ["a clean wooden surface", "without defects"]),
    ("on wood", ["on wood"]),  # a leading preposition opens the first phrase, not an empty one
    ("Riss, oben links", ["riss", "oben links"]),  # other languages: split at punctuation only
    ("", []),
])
def test_phrases_split_at_punctuation_and_before_prepositions(caption, expected):
    from difforge.models.text_encoder import phrases

    assert phrases(caption) == expected
    assert " ".join(phrases(caption)).split() == words(caption)  # every word once, in order
    tok = WordTokenizer.build([caption, "a crack"], max_length=16)
    assert [t for part in tok.phrase_ids(caption) for t in part] == tok.encode([caption])[0][1 : 1 + len(words(caption))].tolist()


def test_cross_attention_matches_a_plain_reference():
    torch.manual_seed(0)
    layer = perturb(CrossAttention(8, 6, head_channels=4))
    x, ctx = torch.randn(2, 5, 8), torch.randn(2, 3, 6)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = layer(x, ctx, mask)
    q = layer.q(x)
    k, v = layer.kv(ctx).chunk(2, dim=-1)
    ref = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        s = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(4)
        s = s.masked_fill(~mask[:, None, :], float("-inf"))
        ref.append(s.softmax(-1) @ v[..., sl])
    assert torch.allclose(out, layer.proj(torch.cat(ref, -1)), atol=1e-5)


def test_position_aware_queries_let_the_text_act_on_one_place():
    """A map that is the same everywhere gets the same update everywhere from plain cross-attention
    (a query only knows what is there); with ``positions`` the update differs by place, and the
    position features are the reference formula: sin / cos of pi f u at the pixel centres."""
    torch.manual_seed(0)
    x, ctx = torch.randn(2, 8, 1, 1).expand(2, 8, 6, 6).contiguous(), (torch.randn(2, 3, 6), None)
    plain = perturb(CrossAttention2d(8, 6, head_channels=4, norm_groups=4))
    out = plain(x, ctx)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out), atol=1e-6)
    placed = perturb(CrossAttention2d(8, 6, head_channels=4, norm_groups=4, positions=True))
    out = placed(x, ctx)
    assert (out - out[:, :, :1, :1]).abs().amax() > 1e-3
    feats = position_features(4, 2)
    u = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    assert feats.shape == (8, 16) and torch.allclose(feats[2 * 3 + 1, 0], torch.sin(math.pi * u[3]))  # row 3, column 1
    assert torch.allclose(feats[2 * 3 + 1, 4], torch.sin(math.pi * torch.tensor(0.5)))  # column 1 of 2 sits at u = 0.5
    assert torch.allclose(position_features(8, 8)[:, 0].view(8, 8)[:, 0], torch.sin(math.pi * (torch.arange(8) + 0.5) / 4 - math.pi))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_takes_text_with_the_same_contract(name):
    torch.manual_seed(0)
    net = perturb(registry.build(name, image_size=8, in_channels=3, num_classes=2, context_dim=16, text_encoder=TEXT, **FAMILIES[name]))
    x, t, y = torch.randn(3, 3, 8, 8), torch.tensor([10.0, 500.0, 990.5]), torch.tensor([0, 1, 2])
    ids = torch.tensor([[BOS, 4, 5, 0, 0, 0, 0, 0], [BOS, 6, 0, 0, 0, 0, 0, 0], [BOS, 0, 0, 0, 0, 0, 0, 0]])
    out = net(x, t, y, context=ids)
    assert out.shape == (3, 3, 8, 8) and torch.isfinite(out).all()
    assert not torch.allclose(out, net(x, t, y))  # the text reaches the output
    # precomputed float context (a CLIP's): padding positions are ignored through the mask
    ctx, mask = net.text_encoder(ids)
    noisy = ctx.clone()
    noisy[~mask] = 1e3
    assert torch.allclose(net(x, t, y, context=ctx, context_mask=mask), net(x, t, y, context=noisy, context_mask=mask), atol=1e-5)
    assert torch.allclose(out, net(x, t, y, context=ctx, context_mask=mask), atol=1e-5)
    # the config rebuilds the same network (the model file's promise), encoder included
    twin = registry.build(name, **net.config)
    twin.load_state_dict(net.state_dict())
    assert torch.allclose(out, twin(x, t, y, context=ids), atol=1e-6)


def _text_pipeline(num_classes=0, captions=("a large scratch", "a small crack on wood")):
    from difforge.pipeline import Pipeline

    tok = WordTokenizer.build(list(captions), max_length=8)
    text = dict(TEXT, vocab_size=len(tok.vocab))
    torch.manual_seed(1)
    net = perturb(registry.build("unet-tiny", image_size=8, in_channels=3, num_classes=num_classes, context_dim=16, text_encoder=text,
                                 **FAMILIES["unet-tiny"]), scale=0.1)
    meta = {"network": {"name": "unet-tiny", "config": net.config},
            "diffusion": {"noise_schedule": "cosine", "diffusion_steps": 1000, "target": "eps"},
            "data": {"image_size": 8, "channels": 3, "class_names": ["crack", "scratch"][:num_classes]},
            "text": {"encoder": "builtin", "vocab": tok.vocab, "max_length": 8}}
    return Pipeline(net, meta, torch.device("cpu")), tok


@pytest.mark.parametrize("num_classes", [0, 2])
def test_cfg_with_text_is_one_forward_and_the_empty_caption_is_the_unconditional_branch(num_classes):
    from difforge.pipeline import SampleConfig

    pipe, tok = _text_pipeline(num_classes)
    view = pipe.with_prompts(["a large scratch", "a small crack on wood"], None, 2, "scratch" if num_classes else None)
    y = view.labels_for(2, None)
    assert y.tolist() == [0, 0, 1, 1] and view.prompts.count == 2
    calls = []
    hook = pipe.net.register_forward_hook(lambda m, a, kw_out: calls.append(a[0].shape[0]))
    den = view.denoiser(SampleConfig(cfg=3.0))
    x, t = torch.randn(4, 3, 8, 8), torch.full((4,), 400.0)
    pred, _, cond_ref = den.raw(x, t, y)
    hook.remove()
    assert calls == [8]  # conditional and unconditional halves in one batched forward
    ids = tok.encode(["a large scratch"] * 2 + ["a small crack on wood"] * 2)
    lab = torch.full((4,), 1) if num_classes else None
    null = torch.full((4,), num_classes) if num_classes else None
    with torch.no_grad():
        cond = pipe.net(x, t, lab, context=ids)
        uncond = pipe.net(x, t, null, context=tok.encode([""] * 4))  # what caption dropout trains
    assert torch.allclose(pred, uncond + 3.0 * (cond - uncond), atol=1e-5)
    # a negative prompt replaces the empty caption in the unconditional row
    neg = pipe.with_prompts("a large scratch", "a small crack", 1, "crack" if num_classes else None)
    assert torch.equal(neg.prompts.context[-1], tok.encode(["a small crack"])[0])


def test_a_text_model_guides_its_noisiest_steps_by_default():
    """cfg_interval "auto" on a text model is TEXT_CFG_INTERVAL (0.1, inf): a prompt request runs the
    unconditional half at every step whose sigma is above 0.1, the noisiest ones too (where a class
    model's CFG_INTERVAL stops at 3), and the same rows as an explicit (0.1, inf)."""
    import math

    from difforge.diffusion.denoiser import in_cfg_interval
    from difforge.pipeline import SampleConfig
    from difforge.pipeline.config import CFG_INTERVAL, TEXT_CFG_INTERVAL

    pipe, _ = _text_pipeline()
    view = pipe.with_prompts(["a large scratch"], None, 2, None)
    assert view.denoiser(SampleConfig()).cfg_interval == TEXT_CFG_INTERVAL == (0.1, math.inf)
    assert pipe.describe()["default_cfg_interval"] == [0.1, None]
    ts = pipe.timesteps(SampleConfig(steps=8))
    sig = torch.as_tensor([float(t) for t in ts])
    noisy = in_cfg_interval(pipe.schedule, sig, TEXT_CFG_INTERVAL)
    assert noisy[0] and not in_cfg_interval(pipe.schedule, sig, CFG_INTERVAL)[0]  # the first step: only the text default guides it

    def rows(**kw):
        seen = []
        hook = pipe.net.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape[0]))
        try:
            pipe.generate(num=2, prompt="a large scratch", seed=0, steps=8, cfg=3.0, **kw)
        finally:
            hook.remove()
        return seen

    assert rows() == [4 if i else 2 for i in noisy.tolist()] == rows(cfg_interval=(0.1, math.inf))


def test_caption_dropout_gives_the_empty_caption():
    from difforge.train.text_cond import TextConditioning

    tok = WordTokenizer.build(["a large scratch", "a crack"], 8)
    text = TextConditioning(["a large scratch", "a crack"], "builtin", tokenizer=tok)
    out = text.context(torch.tensor([0, 1, 0]), torch.tensor([False, True, True]), "cpu")["context"]
    assert torch.equal(out, tok.encode(["a large scratch", "", ""]))


def test_prompts_are_refused_by_a_model_without_text_and_unknown_words_named():
    from difforge.errors import UserError

    pipe, _ = _text_pipeline()
    with pytest.raises(UserError, match="never saw the word.*purple"):
        pipe.with_prompts("a purple scratch", None, 1, None)
    del pipe.meta["text"]
    with pytest.raises(UserError, match="has no text encoder"):
        pipe.with_prompts("a scratch", None, 1, None)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_pooled_text_reaches_the_conditioning_vector(name):
    """With every cross-attention projection at zero, the text still acts through the pooled path
    (the mean of the real tokens, added to the time embedding); padding does not count in the mean."""
    torch.manual_seed(0)
    net = perturb(registry.build(name, image_size=8, in_channels=3, context_dim=16, **FAMILIES[name]))
    for m in net.modules():
        if m.__class__.__name__ == "CrossAttention":
            torch.nn.init.zeros_(m.proj.weight)
            torch.nn.init.zeros_(m.proj.bias)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([100.0, 700.0])
    ctx, mask = torch.randn(2, 4, 16), torch.tensor([[True, True, False, False], [True, False, False, False]])
    a = net(x, t, context=ctx, context_mask=mask)
    assert not torch.allclose(a, net(x, t, context=ctx * 2, context_mask=mask))
    padded = ctx.clone()
    padded[~mask] = 5.0
    assert torch.allclose(a, net(x, t, context=padded, context_mask=mask), atol=1e-5)


def test_word_pooling_is_a_bag_of_words_and_older_files_keep_token_pooling():
    """pool="words": the pooled path is the mean of the caption's word embeddings (a reference
    computed by hand), so word order does not change it; the default (files written before the
    option) pools the transformer's outputs, which do depend on the order."""
    from difforge.models.text_encoder import BuiltinTextEncoder, text_condition

    torch.manual_seed(0)
    assert BuiltinTextEncoder(**TEXT).config["pool"] == "tokens"
    with pytest.raises(Exception, match="pool"):
        BuiltinTextEncoder(**TEXT, pool="max")
    ids = torch.tensor([[BOS, 5, 7, 9, PAD], [BOS, 9, 7, 5, PAD]])  # the same words in two orders
    for pool in ("words", "tokens"):
        net = perturb(registry.build("unet-tiny", image_size=8, in_channels=3, context_dim=16, text_encoder=dict(TEXT, pool=pool),
                                     **FAMILIES["unet-tiny"]))
        emb = torch.zeros(2, net.text_pool.out_features)
        _, got = text_condition(net, ids, None, emb)
        if pool == "words":
            words_mean = net.text_encoder.token(ids[:1, :4]).mean(1)
            torch.testing.assert_close(got[0], net.text_pool(words_mean)[0])
            torch.testing.assert_close(got[0], got[1])
        else:
            assert not torch.allclose(got[0], got[1], atol=1e-4)
