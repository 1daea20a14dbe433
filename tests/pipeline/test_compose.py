"""Composed prompts ("A AND B :w"): parsing, the mixing weights, and the guided prediction
against the composable-diffusion formula computed from direct network calls."""

import pytest
import torch

from difforge.errors import UserError
from difforge.pipeline import SampleConfig
from difforge.pipeline.compose import mixing_rows, prompt_parts

from ..models.test_text_cond import _text_pipeline


def test_parts_and_weights_parse():
    assert prompt_parts("a crack at 3:2 on wood") == [("a crack at 3:2 on wood", 1.0)]  # no AND: one plain part
    assert prompt_parts("a crack and a scratch") == [("a crack and a scratch", 1.0)]  # only a capital AND joins
    assert prompt_parts("a crack AND on wood :0.5 AND a scratch:-1") == [("a crack", 1.0), ("on wood", 0.5), ("a scratch", -1.0)]
    assert prompt_parts("a crack :.25 AND wood") == [("a crack", 0.25), ("wood", 1.0)]
    for bad in ("a crack AND  :2", "AND wood", "a crack AND ", "a crack AND AND wood"):
        with pytest.raises(UserError, match="empty part"):
            prompt_parts(bad)


def test_mixing_rows_merge_repeated_parts_and_give_the_rest_to_the_null_entry():
    texts, classes, w = mixing_rows([[("a", 1.0), ("b", 0.5)], [("a", 2.0)], [("b", 1.0), ("b", 1.0)]], [0, 0, 1])
    assert texts == ["a", "b", "b"] and classes == [0, 0, 1]
    assert w.tolist() == [[1.0, 0.5, 0.0, -0.5], [2.0, 0.0, 0.0, -1.0], [0.0, 0.0, 2.0, -1.0], [0.0, 0.0, 0.0, 1.0]]
    assert torch.allclose(w.sum(1), torch.ones(4, dtype=w.dtype))  # affine: the same in eps, x0 and v


@pytest.mark.parametrize("num_classes", [0, 2])
def test_composed_prompt_is_the_composable_diffusion_formula(num_classes):
    pipe, tok = _text_pipeline(num_classes)
    label = "scratch" if num_classes else None
    view = pipe.with_prompts(["a large scratch AND a small crack on wood :0.5", "a small crack"], None, 2, label)
    y = view.labels_for(2, None)
    assert y.tolist() == [0, 0, 1, 1] and view.prompts.count == 2
    x, t = torch.randn(4, 3, 8, 8), torch.full((4,), 400.0)
    pred, _, _ = view.denoiser(SampleConfig(cfg=3.0, cfg_interval=None)).raw(x, t, y)
    lab = torch.full((2,), 1) if num_classes else None
    null = torch.full((2,), num_classes) if num_classes else None
    with torch.no_grad():
        def out(xs, caption, labels):
            return pipe.net(xs, t[:2], labels, context=tok.encode([caption] * 2))
        a, b = out(x[:2], "a large scratch", lab), out(x[:2], "a small crack on wood", lab)
        u0, u1 = out(x[:2], "", null), out(x[2:], "", null)
        c = out(x[2:], "a small crack", lab)
    # fp32 rounding of a batch of 6 rows against calls of 2, amplified up to 5.5x by the weights (1.1e-5 on an
    # AVX-512 CPU); a wrong weight or row is off by ~0.1
    assert torch.allclose(pred[:2], u0 + 3.0 * ((a - u0) + 0.5 * (b - u0)), atol=5e-5)
    assert torch.allclose(pred[2:], u1 + 3.0 * (c - u1), atol=5e-5)  # a plain row beside a composed one


def test_a_prompt_without_and_keeps_the_one_forward_table():
    pipe, _ = _text_pipeline()
    plain = pipe.with_prompts("a large scratch", None, 2, None)
    assert plain.prompts.weights is None
    composed = pipe.with_prompts("a large scratch AND a small crack :0", None, 2, None)
    assert composed.prompts.weights is not None
    x, t, y = torch.randn(2, 3, 8, 8), torch.full((2,), 300.0), torch.zeros(2, dtype=torch.long)
    with torch.no_grad():  # weight 0 for the second part: the same prediction as the first alone
        assert torch.allclose(composed.prompts(x, t, y), plain.prompts(x, t, y), atol=1e-6)


def test_generate_takes_a_composed_prompt_and_unknown_words_in_a_part_are_named():
    pipe, _ = _text_pipeline()
    out = pipe.generate(num=2, prompt="a large scratch AND a small crack on wood :-0.5", steps=3, seed=0)
    assert out.images.shape == (2, 8, 8, 3)
    with pytest.raises(UserError, match="never saw the word.*purple"):
        pipe.generate(num=1, prompt="a large scratch AND a purple crack", steps=2)
