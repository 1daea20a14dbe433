"""Composition by analogy (pipeline/analogy.py): which training captions compose an unseen combination,
the parts' weights, the guided prediction against direct network calls, and the closed form it is exact for."""

import pytest
import torch

from difforge.data.builtin_captions import place_phrase
from difforge.errors import UserError
from difforge.pipeline import SampleConfig
from difforge.pipeline.analogy import Analogies, at_place
from difforge.pipeline.places import caption_templates

from ..models.test_text_cond import _text_pipeline

# every defect on steel, and on wood all but the crack (the benchmark's held-out pattern), at two places
CAPTIONS = [f"a {size} {defect} {place_phrase(p)} on {surface}"
            for size in ("large", "small") for defect in ("scratch", "crack", "patch") for surface in ("brushed steel", "wood")
            for p in ("top", "centre") if (defect, surface) != ("crack", "wood")]


def test_an_unseen_combination_is_a_parallelogram_of_seen_captions():
    analogies = Analogies(caption_templates(CAPTIONS))
    parts = analogies.parts([("a large crack at the top left on wood", 1.0)])
    # crack on steel + X on wood - X on steel, X every defect seen on both, averaged; at the prompt's place
    want = {"a large crack at the top left on brushed steel": 1.0,
            "a large patch at the top left on wood": 0.5, "a large patch at the top left on brushed steel": -0.5,
            "a large scratch at the top left on wood": 0.5, "a large scratch at the top left on brushed steel": -0.5}
    assert dict(parts) == pytest.approx(want)
    assert sum(w for _, w in parts) == pytest.approx(1.0)  # affine: no unconditional row, guidance as for one caption
    # fewer words than the captions: each parallelogram keeps one size throughout (A, B, C all large or all small)
    short = dict(analogies.parts([("a crack on wood", 1.0)]))
    assert sum(short.values()) == pytest.approx(1.0) and len(short) == 10
    for size in ("large", "small"):
        assert short[f"a {size} crack on brushed steel"] == pytest.approx(0.5)
        assert sum(w for t, w in short.items() if size in t) == pytest.approx(0.5)


def test_a_parallelogram_one_word_further_is_averaged_too_and_a_further_one_is_not():
    captions = [f"a diagonal {d} on {m}" for d in ("crack", "scratch") for m in ("steel", "wood") if (d, m) != ("crack", "wood")]
    captions += [f"a patch on {m}" for m in ("steel", "wood")] + [f"a large round pit on {m}" for m in ("steel", "wood")]
    parts = dict(Analogies(caption_templates(captions)).parts([("a diagonal crack on wood", 1.0)]))
    # scratch changes one word (cost 4 with the surfaces), patch also drops "diagonal" (5); the pit changes three (7)
    assert parts == pytest.approx({"a diagonal crack on steel": 1.0, "a diagonal scratch on wood": 0.5, "a diagonal scratch on steel": -0.5,
                                   "a patch on wood": 0.5, "a patch on steel": -0.5})


def test_strength_keeps_part_of_the_prompt():
    analogies = Analogies(caption_templates(CAPTIONS))
    half = dict(analogies.parts([("a small crack in the centre on wood", 1.0)], strength=0.25))
    assert half["a small crack in the centre on wood"] == pytest.approx(0.75)
    assert half["a small crack in the centre on brushed steel"] == pytest.approx(0.25)
    assert sum(half.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("parts", [
    [("a large crack at the top on brushed steel", 1.0)],  # seen
    [("a large scratch", 1.0)],  # fewer words, seen
    [("a large crack", 1.0), ("on wood", 1.0)],  # a composed prompt: the user's own mix
    [("a large crack at the top on wood", 2.0)],  # a weighted part is a composed prompt too
    [("a large small crack on wood", 1.0)],  # "large" and "small" never together: nothing to compose it from
])
def test_seen_combinations_composed_prompts_and_prompts_without_a_parallelogram_are_left_alone(parts):
    assert Analogies(caption_templates(CAPTIONS)).parts(parts) == parts


def test_no_analogy_without_templates_at_zero_or_for_unknown_words():
    parts = [("a large crack at the top on wood", 1.0)]
    assert Analogies(None).parts(parts) == parts  # files without the list (or from very many captions)
    analogies = Analogies(caption_templates(CAPTIONS))
    assert analogies.parts(parts, 0.0) == parts
    assert analogies.parts(parts, 1.0, known=lambda text: "patch" not in text) == parts


def test_at_place_fills_or_drops_the_mark():
    assert at_place("a crack {place} on wood", "at the top") == "a crack at the top on wood"
    assert at_place("a crack {place} on wood", "") == "a crack on wood"


def test_the_analogy_is_exact_for_independent_experts():
    """Scores that are a sum of a defect's and a surface's part (independent experts): the parallelogram
    gives the held-out combination's score exactly, which the prompt's own embedding does not."""
    torch.manual_seed(0)
    defect = {d: torch.randn(5) for d in ("scratch", "crack", "patch")}
    surface = {m: torch.randn(5) for m in ("brushed steel", "wood")}

    def score(text):
        return sum(v for k, v in {**defect, **surface}.items() if k in text)

    parts = Analogies(caption_templates(CAPTIONS)).parts([("a large crack at the top on wood", 1.0)])
    assert torch.allclose(sum(w * score(t) for t, w in parts), defect["crack"] + surface["wood"], atol=1e-6)


# short enough for the tiny encoder's 8 tokens
SHORT = [f"{defect} {place_phrase(p)} on {surface}" for defect in ("scratch", "crack", "patch") for surface in ("steel", "wood")
         for p in ("top", "centre") if (defect, surface) != ("crack", "wood")]


def test_the_guided_prediction_is_guidance_of_the_analogy_from_direct_calls():
    pipe, tok = _text_pipeline(captions=SHORT)
    pipe.meta["text"]["templates"] = caption_templates(SHORT)
    view = pipe.with_prompts(["crack at the top on wood", "crack at the top on steel"], None, 1, None, place_contrast=0)
    x, t, y = torch.randn(2, 3, 8, 8), torch.full((2,), 700.0), torch.tensor([0, 1])
    pred, _, _ = view.denoiser(SampleConfig(cfg=2.0, cfg_interval=None)).raw(x, t, y)
    with torch.no_grad():
        def out(i, caption):
            return pipe.net(x[i:i + 1], t[:1], None, context=tok.encode([caption]))
        u0, u1 = out(0, ""), out(1, "")
        analogy = out(0, "crack at the top on steel") + sum(
            0.5 * (out(0, f"{d} at the top on wood") - out(0, f"{d} at the top on steel")) for d in ("patch", "scratch"))
        plain = out(0, "crack at the top on wood")
        seen = out(1, "crack at the top on steel")
    assert not torch.allclose(analogy, plain, atol=1e-4)  # the analogy is another prediction than the prompt's own
    assert (view.prompts.weights[0].abs() > 1e-9).sum() == 5  # row 0 mixes the five captions of its two parallelograms
    assert torch.allclose(pred[:1], u0 + 2.0 * (analogy - u0), atol=5e-5)
    assert torch.allclose(pred[1:], u1 + 2.0 * (seen - u1), atol=5e-5)  # seen: its own caption


def test_auto_is_on_and_zero_turns_it_off_and_bad_values_are_refused():
    pipe, _ = _text_pipeline(captions=CAPTIONS)
    pipe.meta["text"]["templates"] = caption_templates(CAPTIONS)
    assert pipe.with_prompts("a large crack on wood", None, 1, None).prompts.weights is not None
    assert pipe.with_prompts("a large crack on wood", None, 1, None, analogy=0).prompts.weights is None
    out = pipe.generate(num=2, prompt="a large crack at the top on wood", analogy=0.5, steps=3, seed=0)
    assert out.images.shape == (2, 8, 8, 3)
    for bad in (-0.1, 1.5, float("nan"), "much", True):
        with pytest.raises(UserError, match="analogy"):
            pipe.generate(num=1, prompt="a large crack on wood", analogy=bad, steps=2)
    del pipe.meta["text"]
    with pytest.raises(UserError, match="has no text encoder.*--analogy"):
        pipe.with_prompts(None, None, 1, None, analogy=1.0)
