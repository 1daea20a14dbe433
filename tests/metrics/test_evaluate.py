"""evaluate(), reference files and image sources with a small TorchScript extractor."""

import numpy as np
import pytest

from difforge.errors import UserError
from difforge.metrics import evaluation as evaluate_mod
from difforge.metrics import evaluate, load_extractor, prepare, save_reference
from difforge.metrics.evaluation import needs, parse_metrics
from difforge.metrics.features import extract
from difforge.metrics.fid import fid_from_features
from difforge.metrics.reference import read_reference
from difforge.metrics.sources import folder_source

from .conftest import make_folder


def _images(n, shift=0, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.integers(0, 200, (n, size, size, 3)) + shift, 0, 255).astype(np.uint8)


def test_metric_names_follow_the_extractor(script_extractor):
    ex = load_extractor(str(script_extractor))
    assert parse_metrics(None, ex) == ["fid", "kid", "pr"]
    with pytest.raises(UserError, match="sfid needs"):
        parse_metrics("fid,sfid", ex)
    with pytest.raises(UserError, match="unknown metric"):
        parse_metrics("fid,bogus", ex)
    assert needs(["fid"], "real") == {"pool": "stats"} and needs(["fid", "kid"], "real") == {"pool": "features"}
    assert needs(["is"], "real") == {} and needs(["is"], "fake") == {"logits": "features"}


def test_evaluate_arrays_and_reference_cache(tmp_path, script_extractor, monkeypatch):
    ex = load_extractor(str(script_extractor))
    real, same, bright = _images(24, seed=1), _images(24, seed=2), _images(24, shift=60, seed=3)
    ref = tmp_path / "real.npz"
    np.savez(ref, arr_0=real)
    r1 = evaluate(ref, same, ["fid", "kid", "pr"], ex, batch_size=7, kid_subset_size=10, kid_subsets=5)
    r2 = evaluate(ref, bright, ["fid", "kid", "pr"], ex, batch_size=7, kid_subset_size=10, kid_subsets=5)
    assert r1["num_real"] == r1["num_fake"] == 24 and r1["extractor"] == ex.name
    assert r2["fid"] > 5 * r1["fid"] and r2["kid"] > r1["kid"] and r2["precision"] < r1["precision"]
    feats = extract(ex, [real[:10], real[10:]], ("pool",))["pool"]
    assert r1["fid"] == pytest.approx(fid_from_features(feats, extract(ex, [same], ("pool",))["pool"]), rel=1e-5)
    # the real images were read once: later calls take the features from the in-process cache
    seen = []
    original = evaluate_mod.prepare
    monkeypatch.setattr(evaluate_mod, "prepare", lambda src, *a, **k: seen.append(src) or original(src, *a, **k))
    evaluate(ref, same, ["fid", "kid", "pr"], ex, kid_subset_size=10, kid_subsets=5)
    assert len(seen) == 1 and not isinstance(seen[0], type(ref))


def test_reference_roundtrip_and_extractor_check(tmp_path, script_extractor):
    ex = load_extractor(str(script_extractor))
    root = make_folder(tmp_path / "real", ["a", "b"], 4, size=16)
    src = folder_source(root)
    assert src.count == 8 and src.class_names == ["a", "b"] and src.image_size == 16
    fs = prepare(root, ex, {"pool": "features"}, batch_size=3)
    out = save_reference(tmp_path / "ref.npz", fs)
    back, needs_images = read_reference(out, ex.name)
    assert not needs_images and back.class_names == ["a", "b"] and back.labels.tolist() == [0] * 4 + [1] * 4
    np.testing.assert_allclose(back.pool, fs.pool)
    np.testing.assert_allclose(back.gaussian()[1], fs.gaussian()[1])
    with pytest.raises(UserError, match="computed with the feature extractor"):
        read_reference(out, "inception-v3-fid")
    with pytest.raises(UserError, match="must end in .npz"):
        save_reference(tmp_path / "ref.txt", fs)


def test_guided_diffusion_batch_statistics_only_for_inception(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "VIRTUAL_ref.npz"
    np.savez(path, arr_0=_images(4), mu=rng.standard_normal(5), sigma=np.eye(5), mu_s=np.zeros(3), sigma_s=np.eye(3))
    fs, needs_images = read_reference(path, "inception-v3-fid")
    assert needs_images and set(fs.stats) == {"pool", "spatial"} and fs.pool is None
    fs, needs_images = read_reference(path, "torchscript:x.pt:abc")
    assert needs_images and not fs.stats


def test_stats_only_reference_cannot_serve_kid(tmp_path, script_extractor):
    ex = load_extractor(str(script_extractor))
    path = tmp_path / "stats.npz"
    np.savez(path, mu=np.zeros(11), sigma=np.eye(11), extractor=np.array(ex.name))
    assert prepare(path, ex, {"pool": "stats"}).stats["pool"][0].shape == (11,)
    with pytest.raises(UserError, match="no pool features"):
        prepare(path, ex, {"pool": "features"})


def test_evaluate_per_class_with_labelled_samples(tmp_path, script_extractor):
    ex = load_extractor(str(script_extractor))
    root = make_folder(tmp_path / "real", ["crack", "ok"], 5, size=16)
    fake = np.concatenate([_images(4, seed=5), _images(6, shift=50, seed=6)])
    labels = [0] * 4 + [1] * 6  # indices into the class_names below, not the folder's order (crack, ok)
    out = evaluate(root, fake, ["fid", "kid"], ex, fake_labels=labels, class_names=["ok", "crack"], kid_subsets=3)
    assert set(out["per_class"]) == {"crack", "ok"}
    assert out["per_class"]["ok"]["num_fake"] == 4 and out["per_class"]["crack"]["num_fake"] == 6
    assert out["per_class"]["crack"]["fid"] > out["per_class"]["ok"]["fid"]  # the brightened class is farther off


class _InceptionLike:
    """A cheap stand-in with the Inception extractor's three outputs (fixed random projections)."""

    name = "inception-v3-fid"
    outputs = ("pool", "spatial", "logits")

    def __call__(self, images):
        import torch

        x = images.float().mean(dim=(2, 3)) / 255.0  # (N, 3)
        g = torch.Generator().manual_seed(0)
        proj = {k: torch.randn(3, d, generator=g) for k, d in (("pool", 16), ("spatial", 12), ("logits", 10))}
        return {k: torch.relu(x @ w) if k == "pool" else (x - 0.4) @ w * 5 for k, w in proj.items()}


def test_all_metrics_with_inception_outputs(tmp_path):
    ex = _InceptionLike()
    real, fake = _images(30, seed=1), _images(30, shift=30, seed=2)
    out = evaluate(real, fake, None, ex, kid_subsets=3)
    assert {"fid", "sfid", "kid", "kid_std", "is", "is_std", "precision", "recall"} <= set(out)
    assert out["sfid"] > 0 and out["is"] >= 1.0
    # a guided-diffusion reference batch: images plus stored TF statistics, which FID then uses
    path = tmp_path / "VIRTUAL_ref.npz"
    mu, sigma = np.zeros(16), np.eye(16)
    np.savez(path, arr_0=real, mu=mu, sigma=sigma, mu_s=np.zeros(12), sigma_s=np.eye(12))
    stored = evaluate(path, fake, ["fid", "kid"], ex, kid_subsets=3)
    fake_feats = prepare(fake, ex, {"pool": "features"}).pool
    from difforge.metrics.fid import frechet_distance, statistics

    assert stored["fid"] == pytest.approx(frechet_distance(mu, sigma, *statistics(fake_feats)))
    assert stored["kid"] == pytest.approx(out["kid"])  # KID from the batch's own images
