"""benchmarks/quality_budget.py: ``--score MODEL --upscale UPSAMPLER`` samples the model through that upsampler
(how session 31 paired a base with another run's upsampler), and without it through the model's own default."""

import types

import pytest
import torch

from benchmarks import quality_budget as qb


class _Pipe:
    def __init__(self):
        self.calls = []

    def generate(self, num, class_label, seed, **opts):
        self.calls.append(dict(num=num, class_label=class_label, seed=seed, **opts))
        side = 64 if "upscale" in opts else 32
        return types.SimpleNamespace(images=torch.zeros(2 * num, side, side, 1, dtype=torch.uint8), labels=torch.arange(2 * num) % 2)


class _Judge:
    names, eval_per_class = ["a", "b"], 100

    def __init__(self):
        self.sides = []

    def score(self, images, labels):
        self.sides.append(images.shape[1])
        return dict(acc=1.0, fd=0.0)


@pytest.mark.parametrize("upscale, side", [(None, 32), ("up/ema.safetensors", 64)])
def test_sampled_rows_sends_the_images_through_the_given_upsampler(upscale, side):
    pipe, jd = _Pipe(), _Judge()
    rows = qb.sampled_rows(pipe, jd, [None, 2.0], "m", sample_seed=7, upscale=upscale, dataset="glyphs")
    assert [c.get("upscale") for c in pipe.calls] == [upscale, upscale]
    assert [c.get("cfg") for c in pipe.calls] == [None, 2.0]
    assert all(c["seed"] == 7 and c["num"] == 100 and c["class_label"] == "all" for c in pipe.calls)
    assert jd.sides == [side, side] and [r["recipe"] for r in rows] == ["m", "m, cfg 2"]


def test_upscale_without_models_to_score_is_refused(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["quality_budget.py", "--upscale", "up.safetensors"])
    with pytest.raises(SystemExit) as e:
        qb.main()
    assert e.value.code == 2 and "--upscale pairs the models of --score" in capsys.readouterr().err
