"""Inception Score on logits with a known answer."""

import numpy as np
import pytest

from difforge.metrics.inception_score import inception_score


def test_uniform_predictions_score_one():
    mean, std = inception_score(np.zeros((50, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_identical_confident_predictions_score_one():
    logits = np.zeros((40, 10))
    logits[:, 3] = 200.0
    assert inception_score(logits)[0] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [2, 5, 7])
def test_one_hot_spread_over_k_classes_scores_k(k):
    splits = 10
    labels = np.tile(np.arange(k), 3 * splits)  # every split holds each class 3 times
    logits = np.full((len(labels), 1008), -50.0)
    logits[np.arange(len(labels)), labels] = 50.0
    mean, std = inception_score(logits, splits=splits)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_partial_confidence_lies_between():
    rng = np.random.default_rng(0)
    mean, _ = inception_score(rng.standard_normal((100, 20)) * 2, splits=5)
    assert 1.0 < mean < 20.0
