"""`difforge nll`: bits/dim of held-out images for learned- and fixed-variance model files."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from difforge.cli.main import main
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny model files (learned and fixed variance), T = 40 so the full bound is 40 calls."""
    from difforge.train.trainer import Trainer

    tmp = tmp_path_factory.mktemp("nll_models")
    out = {}
    for name, kw in (("learned", dict(learn_sigma=True)), ("fixed", dict(conditional=False))):
        r = Trainer(progress=False, **tiny_overrides(tmp, run=name, max_steps=3, diffusion_steps=40, preview_steps=2, **kw)).fit()
        out[name] = r.model_file
    return out


def _run(capsys, *args):
    code = main(["nll", *map(str, args), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_nll_prints_finite_bits_per_dim(models, capsys):
    code, out, _ = _run(capsys, models["learned"], "--num", "6", "--batch-size", "4")
    assert code == 0, out
    line = next(l for l in out.splitlines() if l.startswith("bits/dim:"))
    value = float(line.split()[1])
    assert math.isfinite(value) and 0 < value < 40
    assert "learned variance" in out and "conditioned on their classes" in out and "seed 1000" in out


def test_nll_fixed_variance_json_and_reproducible(models, capsys):
    reports = []
    for extra in ([], [], ["--variance", "fixed_small"]):
        code, out, _ = _run(capsys, models["fixed"], "--num", "4", "--batch-size", "4", "--json", *extra)
        assert code == 0
        reports.append(json.loads(out))
    assert reports[0]["variance"] == "fixed_large" and reports[2]["variance"] == "fixed_small"
    assert reports[0]["bits_per_dim"] == reports[1]["bits_per_dim"]  # same seed, same number
    assert reports[0]["bits_per_dim"] != reports[2]["bits_per_dim"]
    r = reports[0]
    parts = r["prior_bits_per_dim"] + r["decoder_bits_per_dim"] + r["kl_terms_bits_per_dim"]
    assert r["bits_per_dim"] == pytest.approx(parts, rel=1e-9)
    assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))


def test_nll_on_a_folder_and_errors(models, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for cls in ("scratch", "crack"):
        (tmp_path / "held" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "held" / cls / f"{i}.png")
    code, out, _ = _run(capsys, models["learned"], "--data", tmp_path / "held", "--num", "4", "--batch-size", "4")
    assert code == 0 and "4 images from" in out and "conditioned on their classes" in out
    code, _, err = _run(capsys, models["fixed"], "--variance", "learned", "--num", "2")
    assert code == 2 and "learn_sigma" in err


def test_nll_estimate_by_default_and_full_on_request(models, capsys):
    """T = 40: --timesteps 10 is an estimate with an error bar; --full and K >= T are the exact value."""
    reports = {}
    for name, extra in (("est", ["--timesteps", "10"]), ("full", ["--full"]), ("k_t", ["--timesteps", "40"])):
        code, out, _ = _run(capsys, models["fixed"], "--num", "4", "--batch-size", "4", "--json", "--precision", "fp32", *extra)
        assert code == 0
        reports[name] = json.loads(out)
    est, full = reports["est"], reports["full"]
    assert not est["exact"] and est["timesteps"] == 10 and est["timestep_std_error"] > 0
    assert full["exact"] and full["timesteps"] == 40 and full["timestep_std_error"] == 0
    assert reports["k_t"]["bits_per_dim"] == full["bits_per_dim"]
    assert abs(est["bits_per_dim"] - full["bits_per_dim"]) <= 3 * est["timestep_std_error"]
    assert est["prior_bits_per_dim"] == full["prior_bits_per_dim"] and est["decoder_bits_per_dim"] == full["decoder_bits_per_dim"]
    code, out, _ = _run(capsys, models["fixed"], "--num", "4", "--batch-size", "4", "--timesteps", "10", "--precision", "fp32")
    assert code == 0 and "estimate: 10 of 40 steps" in out and "--full" in out
    code, _, err = _run(capsys, models["fixed"], "--num", "4", "--timesteps", "1")
    assert code == 2 and "--timesteps" in err
