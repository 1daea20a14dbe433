"""Place contrast (pipeline/places.py): which prompts get it, with which parts, and the guided
prediction against the formula computed from direct network calls."""

import pytest
import torch

from difforge.data.builtin_captions import POSITIONS, place_phrase
from difforge.errors import UserError
from difforge.pipeline import SampleConfig
from difforge.pipeline.places import contrast_parts, neighbours

from ..models.test_text_cond import _text_pipeline

CAPTIONS = [f"a scratch {place_phrase(p)} on wood" for p in POSITIONS]


def test_neighbours_are_the_adjacent_cells_of_the_grid():
    assert neighbours("top left") == ["top", "left", "centre"]
    assert neighbours("bottom") == ["left", "centre", "right", "bottom left", "bottom right"]
    assert neighbours("centre") == [p for p in POSITIONS if p != "centre"]


def test_contrast_parts_swap_the_place_phrase_and_sum_to_one():
    parts = contrast_parts([("a large scratch at the top left on steel", 1.0)], 2.0)
    assert parts == [("a large scratch at the top left on steel", 3.0), ("a large scratch at the top on steel", -2 / 3),
                     ("a large scratch at the left on steel", -2 / 3), ("a large scratch in the centre on steel", -2 / 3)]
    assert sum(w for _, w in parts) == pytest.approx(1.0)  # affine: the same in eps, x0 and v
    centre = contrast_parts([("a crack in the centre", 1.0)], 1.0)
    assert len(centre) == 9 and {t for t, _ in centre[1:]} == {f"a crack {place_phrase(p)}" for p in POSITIONS if p != "centre"}


@pytest.mark.parametrize("parts", [
    [("a large scratch on steel", 1.0)],  # no place
    [("a scratch at the top left and at the bottom", 1.0)],  # two places: which one is meant is not clear
    [("a scratch at the topmost edge", 1.0)],  # "at the top" only as a part of another word
    [("a scratch", 1.0), ("at the top left", 1.0)],  # a composed prompt: the user's own mix
])
def test_prompts_without_one_clear_place_are_left_alone(parts):
    assert contrast_parts(parts, 1.0) == parts


def test_no_contrast_at_zero_or_when_a_neighbour_has_unknown_words():
    parts = [("a scratch at the top left", 1.0)]
    assert contrast_parts(parts, 0.0) == parts
    assert contrast_parts(parts, 1.0, known=lambda text: "centre" not in text) == parts


def test_the_guided_prediction_is_guidance_plus_the_contrast_with_the_neighbours():
    pipe, tok = _text_pipeline(captions=CAPTIONS)
    view = pipe.with_prompts(["a scratch at the top left on wood", "a scratch on wood"], None, 1, None, place_contrast=0.5)
    x, t, y = torch.randn(2, 3, 8, 8), torch.full((2,), 600.0), torch.tensor([0, 1])
    pred, _, _ = view.denoiser(SampleConfig(cfg=3.0, cfg_interval=None)).raw(x, t, y)
    with torch.no_grad():
        def out(i, caption):
            return pipe.net(x[i:i + 1], t[:1], None, context=tok.encode([caption]))
        c, u0, u1 = out(0, "a scratch at the top left on wood"), out(0, ""), out(1, "")
        near = sum(out(0, f"a scratch {place_phrase(q)} on wood") for q in ("top", "left", "centre")) / 3
        plain = out(1, "a scratch on wood")
    assert not torch.allclose(c, near, atol=1e-3)  # the neighbours do predict something else
    assert torch.allclose(pred[:1], u0 + 3.0 * (c - u0) + 3.0 * 0.5 * (c - near), atol=5e-5)
    assert torch.allclose(pred[1:], u1 + 3.0 * (plain - u1), atol=5e-5)  # no place: plain guidance


def test_auto_is_the_measured_default_and_zero_turns_it_off():
    from difforge.pipeline.config import PLACE_CONTRAST

    pipe, _ = _text_pipeline(captions=CAPTIONS)
    auto = pipe.with_prompts("a scratch in the centre on wood", None, 1, None)
    assert PLACE_CONTRAST > 0 and auto.prompts.weights is not None
    assert auto.prompts.weights[0, 0].item() == pytest.approx(1 + PLACE_CONTRAST)
    assert pipe.with_prompts("a scratch in the centre on wood", None, 1, None, place_contrast=0).prompts.weights is None
    out = pipe.generate(num=2, prompt="a scratch at the bottom on wood", place_contrast=1.5, steps=3, seed=0)
    assert out.images.shape == (2, 8, 8, 3)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "strong", True])
def test_a_bad_strength_is_refused_by_name(bad):
    pipe, _ = _text_pipeline(captions=CAPTIONS)
    with pytest.raises(UserError, match="place_contrast"):
        pipe.generate(num=1, prompt="a scratch at the top on wood", place_contrast=bad, steps=2)


def test_a_model_without_text_refuses_an_explicit_strength():
    pipe, _ = _text_pipeline(captions=CAPTIONS)
    del pipe.meta["text"]
    assert pipe.with_prompts(None, None, 1, None) is pipe  # auto: nothing asked, nothing refused
    with pytest.raises(UserError, match="has no text encoder.*--place-contrast"):
        pipe.with_prompts(None, None, 1, None, place_contrast=1.0)


def test_the_combinations_a_model_saw_are_its_captions_without_their_places(monkeypatch):
    from difforge.pipeline import places

    captions = ["a scratch at the top on wood", "a scratch in the centre on wood", "a crack at the left on steel", "a  crack"]
    assert places.caption_templates(captions) == ["a crack", "a crack {place} on steel", "a scratch {place} on wood"]
    seen = places.was_seen(places.caption_templates(captions))
    assert seen("a scratch at the bottom right on wood")  # the same combination at another place
    assert seen("A scratch at the top.")  # fewer words: some caption had them all
    assert not seen("a crack at the top on wood")  # crack and wood never in one caption
    assert places.was_seen(None)("a crack at the top on wood")  # no list: every prompt counts as seen
    old = places.was_seen(["a crack on steel", "a on scratch wood"])  # the word sets files of before listed
    assert old("a scratch at the top on wood") and not old("a crack at the top on wood")
    monkeypatch.setattr(places, "MAX_COMBINATIONS", 2)
    assert places.caption_templates(captions) is None


def test_a_combination_the_model_never_saw_is_not_contrasted():
    pipe, _ = _text_pipeline(captions=CAPTIONS + ["a crack at the top on steel"])
    pipe.meta["text"]["combinations"] = ["a on scratch wood", "a crack on steel"]
    seen = pipe.with_prompts(["a scratch at the top on wood", "a crack at the top on wood"], None, 1, None, place_contrast=1.0)
    w = seen.prompts.weights.abs() > 1e-9  # row 0 mixes its caption and the five cells beside "top"; row 1 is its caption alone
    assert w[0].sum() == 6 and w[1].sum() == 1 and seen.prompts.weights[1].max() == 1.0
    assert seen.prompts.weights[0, -1] == 0  # parts summing to one: no forward of the null entry for that row
