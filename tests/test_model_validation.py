"""Malformed model files: each one is a one-line error through `difforge info` and `difforge sample`.

The variants are generated from one good tiny model file: broken metadata (missing keys, wrong
types, out-of-range sizes, unknown names, bad JSON) and broken files (truncated header or data,
wrong or missing tensors, NaN weights), written with safetensors directly.
"""

import copy
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from difforge.cli import main as cli_main
from difforge.modelfile import FORMAT_VERSION, MODEL_FORMAT

TINY_NET = {"base_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [8], "head_channels": 16}


def good_model():
    from difforge.models import registry

    torch.manual_seed(0)
    net = registry.build("unet", image_size=16, in_channels=3, num_classes=2, **TINY_NET)
    meta = {"format": MODEL_FORMAT, "version": FORMAT_VERSION, "kind": "diffusion",
            "network": {"name": "unet", "config": net.config},
            "diffusion": {"noise_schedule": "linear", "diffusion_steps": 100, "target": "eps", "learn_sigma": False},
            "data": {"image_size": 16, "channels": 3, "class_names": ["a", "b"]}}
    return {k: v.clone() for k, v in net.state_dict().items()}, meta


def _set(path, value):
    """A meta edit: ``path`` "a.b.c" set to ``value`` (DELETE removes it)."""
    def edit(meta):
        *parents, last = path.split(".")
        d = meta
        for p in parents:
            d = d[p]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return edit


DELETE = object()
META_EDITS = {
    "kind unknown": _set("kind", "gan"),
    "kind a number": _set("kind", 5),
    "network missing": _set("network", DELETE),
    "network a string": _set("network", "unet"),
    "network.name missing": _set("network.name", DELETE),
    "network.name a number": _set("network.name", 123),
    "network unknown": _set("network.name", "no-such-net"),
    "network of another family": _set("network.name", "vae"),
    "network.config missing": _set("network.config", DELETE),
    "network.config a list": _set("network.config", [1, 2]),
    "config value wrong type": _set("network.config.base_channels", "x"),
    "config value negative": _set("network.config.base_channels", -16),
    "config value zero": _set("network.config.num_res_blocks", 0),
    "config unknown key": _set("network.config.foo", 1),
    "config channel_mult text": _set("network.config.channel_mult", "12"),
    "config num_classes mismatch": _set("network.config.num_classes", 5),
    "config in_channels mismatch": _set("network.config.in_channels", 1),
    "config huge width": _set("network.config.base_channels", 1 << 20),
    "diffusion missing": _set("diffusion", DELETE),
    "diffusion null": _set("diffusion", None),
    "schedule unknown": _set("diffusion.noise_schedule", "zigzag"),
    "steps negative": _set("diffusion.diffusion_steps", -5),
    "steps text": _set("diffusion.diffusion_steps", "100"),
    "steps too few for linear": _set("diffusion.diffusion_steps", 10),
    "steps huge": _set("diffusion.diffusion_steps", 10 ** 12),
    "target unknown": _set("diffusion.target", "y"),
    "noise shift zero": _set("diffusion.noise_shift", 0),
    "noise shift text": _set("diffusion.noise_shift", "2"),
    "learn_sigma text": _set("diffusion.learn_sigma", "yes"),
    "data missing": _set("data", DELETE),
    "image_size zero": _set("data.image_size", 0),
    "image_size negative": _set("data.image_size", -16),
    "image_size float": _set("data.image_size", 16.5),
    "image_size text": _set("data.image_size", "16"),
    "image_size huge": _set("data.image_size", 10 ** 9),
    "image_size bool": _set("data.image_size", True),
    "channels zero": _set("data.channels", 0),
    "channels seven": _set("data.channels", 7),
    "class_names text": _set("data.class_names", "ab"),
    "class_names numbers": _set("data.class_names", [1, 2]),
    "class_names repeated": _set("data.class_names", ["a", "a"]),
    "latent a string": _set("latent", "x"),
    "latent vae_path a number": _set("latent", {"vae_path": 3, "scale_factor": 0.18}),
    "latent scale negative": _set("latent", {"vae_path": "v.safetensors", "scale_factor": -1}),
    "latent scale NaN": _set("latent", {"vae_path": "v.safetensors", "scale_factor": float("nan")}),
    "latent VAE gone": _set("latent", {"vae_path": "/nonexistent/v.safetensors", "vae_sha256": "0" * 64, "scale_factor": 0.18}),
    "cascade a string": _set("cascade", "x"),
    "cascade scale one": _set("cascade", {"upsampler_relpath": "u", "upsampler_path": "u", "scale": 1, "image_size": 16}),
    "cascade size not scale x size": _set("cascade", {"upsampler_relpath": "u", "upsampler_path": "u", "scale": 2, "image_size": 3}),
    "format other": _set("format", "other"),
    "version newer": _set("version", 99),
    "version text": _set("version", "1"),
}
RAW_META = {"metadata not JSON": "{not json", "metadata a list": "[1, 2]", "metadata null": "null",
            "metadata nested too deep": "[" * 100000 + "]" * 100000}


def _write(path, tensors, meta_text):
    save_file(tensors, str(path), metadata=None if meta_text is None else {"difforge": meta_text})


def make_variants(folder):
    """{name: path} of every malformed variant (and 'good')."""
    tensors, meta = good_model()
    out = {}

    def put(name, tensors, meta_text):
        path = folder / (name.replace(" ", "_").replace(".", "_") + ".safetensors")
        _write(path, tensors, meta_text)
        out[name] = path

    put("good", tensors, json.dumps(meta))
    for name, edit in META_EDITS.items():
        m = copy.deepcopy(meta)
        edit(m)
        put(name, tensors, json.dumps(m))
    for name, text in RAW_META.items():
        put(name, tensors, text)
    put("no difforge metadata", tensors, None)
    first = next(iter(tensors))
    put("tensor wrong shape", {**tensors, first: torch.zeros(3, 3)}, json.dumps(meta))
    put("tensor missing", {k: v for k, v in tensors.items() if k != first}, json.dumps(meta))
    put("tensor extra", {**tensors, "extra.weight": torch.zeros(2)}, json.dumps(meta))
    nan = {k: v.clone() for k, v in tensors.items()}
    nan[first].view(-1)[0] = float("nan")
    put("NaN weights", nan, json.dumps(meta))
    inf = {k: v.clone() for k, v in tensors.items()}
    inf[first].view(-1)[0] = float("inf")
    put("Inf weights", inf, json.dumps(meta))
    state = copy.deepcopy(meta)
    state["format"] = "difforge-train-state"
    put("state file without model", tensors, json.dumps(state))
    data = out["good"].read_bytes()
    for name, blob in {"empty file": b"", "truncated header": data[:10], "truncated data": data[:-100],
                       "header length huge": struct.pack("<Q", 1 << 60) + data[8:]}.items():
        path = folder / (name.replace(" ", "_") + ".safetensors")
        path.write_bytes(blob)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return make_variants(tmp_path_factory.mktemp("malformed"))


def _run(argv, capsys):
    """(exit status, stderr, stdout) of the CLI in this process; an uncaught exception is a traceback."""
    try:
        code = cli_main.main(argv)
    except BaseException as e:  # noqa: B902 - counted as a traceback
        return "traceback", f"{type(e).__name__}: {e}", ""
    got = capsys.readouterr()
    return code, got.err, got.out


def test_there_are_many_variants(variants):
    assert len(variants) - 1 >= 36


def test_good_file_works(variants, capsys, tmp_path):
    assert _run(["info", str(variants["good"])], capsys)[0] == 0
    assert _run(["sample", str(variants["good"]), "--num", "1", "--steps", "2", "--out", str(tmp_path / "s"), "--quiet"], capsys)[0] == 0


@pytest.mark.parametrize("command", ["info", "sample"])
def test_every_variant_is_one_line(variants, capsys, tmp_path, command):
    results = {}
    for name, path in variants.items():
        if name == "good" or (command == "info" and name in ("NaN weights", "Inf weights")):
            continue
        argv = [command, str(path)] + (["--num", "1", "--steps", "2", "--out", str(tmp_path / "s"), "--quiet"] if command == "sample" else [])
        results[name] = _run(argv, capsys)
    bad = {n: r for n, r in results.items() if r[0] != 2 or r[1].count("\n") != 1 or "Traceback" in r[1]}
    assert not bad, bad
    for name, (code, err, _) in results.items():
        assert err.startswith(f"difforge {command}: error: ") and str(variants[name].name) in err, (name, err)


def test_info_reports_nan_weights(variants, capsys):
    for name in ("NaN weights", "Inf weights"):
        code, _, out = _run(["info", str(variants[name])], capsys)
        line = next(x for x in out.splitlines() if x.startswith("nonfinite_weights"))
        assert code == 0 and "1 of" in line and "hold NaN/Inf" in line, out
    code, _, out = _run(["info", "--json", str(variants["good"])], capsys)
    assert code == 0 and json.loads(out)["nonfinite_weights"] == "none"


def test_messages_name_the_field(variants, capsys):
    expect = {"image_size negative": "data.image_size", "network unknown": "network.name", "steps text": "diffusion.diffusion_steps",
              "class_names numbers": "data.class_names", "config value wrong type": "network.config", "latent scale NaN": "latent.scale_factor",
              "tensor wrong shape": "shape mismatch", "NaN weights": "NaN/Inf weights"}
    for name, field in expect.items():
        code, err, _ = _run(["sample", str(variants[name]), "--num", "1"], capsys)
        assert code == 2 and field in err, (name, err)


def test_sampling_stops_at_nan_with_the_file_and_step(variants):
    from difforge.errors import CheckpointError
    from difforge.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(variants["NaN weights"], device="cpu", precision="fp32", check_weights=False)
    for sampler in ("ddim", "ddpm", "dpm++2m"):
        with pytest.raises(CheckpointError) as e:
            pipe.generate(num=3, steps=4, sampler=sampler, batch_size=2)
        msg = str(e.value)
        assert "NaN_weights.safetensors gave NaN/Inf values at step 1 of 4 (batch 1)" in msg and "diverged" in msg, msg


@pytest.mark.parametrize("kind", ["classifier", "vae"])
def test_classifier_and_vae_loaders_check_the_metadata(tmp_path, kind):
    from difforge.codec import load_vae
    from difforge.errors import CheckpointError
    from difforge.pipeline.guidance import load_classifier

    meta = {"format": MODEL_FORMAT, "version": FORMAT_VERSION, "kind": kind, "network": {"name": "unet", "config": {}},
            "diffusion": {"noise_schedule": "linear", "diffusion_steps": 100}, "data": {"image_size": 16, "channels": 3, "class_names": ["a"]}}
    path = tmp_path / f"{kind}.safetensors"
    _write(path, {"w": torch.zeros(1)}, json.dumps(meta))
    load = load_classifier if kind == "classifier" else load_vae
    with pytest.raises(CheckpointError, match="do not fit" if kind == "classifier" else "network.name is 'unet', which a vae model file cannot use"):
        load(path, torch.device("cpu"))
    meta["data"]["image_size"] = -1
    meta["network"]["name"] = "classifier-tiny" if kind == "classifier" else "vae"
    _write(path, {"w": torch.zeros(1)}, json.dumps(meta))
    with pytest.raises(CheckpointError, match="data.image_size"):
        load(path, torch.device("cpu"))
