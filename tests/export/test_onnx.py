"""ONNX export: every network family's graph computes what the torch network computes.

Which families export (and why the others do not) is stated in difforge/export/onnx.py; a
family listed in ``NOT_EXPORTED`` would be checked to fail with one clear line instead.
"""

import json
import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from difforge.cli.main import main  # noqa: E402
from difforge.errors import ConfigError, UserError  # noqa: E402
from difforge.export.onnx import OnnxNet, export_onnx  # noqa: E402
from tests.export.runkit import FAMILIES, save_model_file, tiny_model_file  # noqa: E402

TOL = 1e-4  # float32 graphs; measured differences are ~1e-6


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("num_classes,learn_sigma", [(3, False), (0, True)])
def test_onnx_matches_torch(tmp_path, family, num_classes, learn_sigma):
    model, net = tiny_model_file(tmp_path / "m.safetensors", family, num_classes=num_classes, learn_sigma=learn_sigma)
    r = export_onnx(model, tmp_path / "m.onnx", check=True)
    assert r.inputs == (["x", "t", "y"] if num_classes else ["x", "t"])
    assert r.max_abs_diff is not None and r.max_abs_diff < TOL
    onet = OnnxNet(r.path)
    # dynamic batch: a batch size the export never saw, fractional t, every class and the null class
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 3, 16, 16, generator=g)
    t = torch.tensor([0.0, 10.5, 250.0, 777.25, 999.0])
    y = torch.tensor([0, 1, 2, 3, 1]) if num_classes else None
    with torch.no_grad():
        ref = net(x, t, y)
    got = onet(x, t, y)
    assert got.shape == ref.shape == (5, 6 if learn_sigma else 3, 16, 16)
    assert (got - ref).abs().max() < TOL
    assert ref.abs().max() > 1e-2  # the weights are perturbed: a zero network would pass trivially


def test_metadata_travels_and_wrapper_acts_like_a_network(tmp_path):
    model, net = tiny_model_file(tmp_path / "m.safetensors", "unet", num_classes=3)
    export_onnx(model, tmp_path / "m.onnx", check=False)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    meta = json.loads(props["difforge"])
    assert meta["network"]["name"] == "unet" and meta["data"]["class_names"] == ["scratch", "crack", "patch"]
    onet = OnnxNet(tmp_path / "m.onnx")
    assert onet.eval().requires_grad_(False).to("cpu") is onet
    assert sum(p.numel() for p in onet.parameters()) == sum(p.numel() for p in net.parameters())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5.0, 500.0])
    with torch.no_grad():  # y=None on a conditional network is the null class, as in torch
        assert (onet(x, t) - net(x, t)).abs().max() < TOL
        assert (onet(x, t, torch.tensor([3, 3])) - net(x, t)).abs().max() < TOL
    with pytest.raises(UserError, match="torch backend"):
        onet(x, t, mask=torch.ones(2, 1, 16, 16))


def test_vae_files_are_refused_with_the_reason(tmp_path):
    save_model_file(tmp_path / "vae.safetensors", {"w": torch.zeros(1)}, {"kind": "vae", "network": {"name": "vae", "config": {}}})
    with pytest.raises(UserError, match="vae model file"):
        export_onnx(tmp_path / "vae.safetensors", tmp_path / "vae.onnx")


def test_missing_extra_is_one_line(tmp_path, monkeypatch):
    model, _ = tiny_model_file(tmp_path / "m.safetensors", "unet")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'difforge\[onnx\]'"):
        export_onnx(model, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"difforge\[onnx\]"):
        OnnxNet(tmp_path / "m.onnx")


def test_cli_export_prints_the_check(tmp_path, capsys):
    model, _ = tiny_model_file(tmp_path / "m.safetensors", "dit", num_classes=3)
    assert main(["export-onnx", str(model), str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "inputs x, t, y" in out and "max |onnxruntime - torch|" in out
    diff = float(out.split("= ")[-1].split()[0])
    assert diff < TOL
    assert main(["export-onnx", str(model), str(tmp_path / "n.onnx"), "--no-check"]) == 0
    assert "check:" not in capsys.readouterr().out
    assert main(["export-onnx", str(model), str(tmp_path / "bad.txt")]) == 2


def test_pipeline_and_sample_cli_on_the_onnx_backend(tmp_path, capsys):
    from difforge.pipeline import Pipeline

    model, _ = tiny_model_file(tmp_path / "m.safetensors", "unet", num_classes=3)
    with pytest.raises(UserError, match="export-onnx"):
        Pipeline.from_checkpoint(model, device="cpu", backend="onnx")  # no m.onnx yet: says how to make it
    export_onnx(model, tmp_path / "m.onnx", check=False)  # the default place: beside the model file
    opts = dict(num=4, class_label="all", sampler="ddim", steps=4, cfg=2.0, seed=3)
    ref = Pipeline.from_checkpoint(model, device="cpu", precision="fp32").generate(**opts)
    pipe = Pipeline.from_checkpoint(model, device="cpu", backend="onnx")
    assert isinstance(pipe.net, OnnxNet) and pipe.describe()["parameters"] > 0
    got = pipe.generate(**opts)
    assert got.images.shape == ref.images.shape == (12, 16, 16, 3)
    assert (got.images.int() - ref.images.int()).abs().max() <= 1  # uint8 rounding of ~1e-6 differences
    # an ONNX file from another model file is refused
    other, _ = tiny_model_file(tmp_path / "o.safetensors", "dit", num_classes=3)
    export_onnx(other, tmp_path / "o.onnx", check=False)
    with pytest.raises(UserError, match="another model file"):
        Pipeline.from_checkpoint(model, device="cpu", onnx=tmp_path / "o.onnx")
    out = tmp_path / "samples"
    assert main(["sample", str(model), "--backend", "onnx", "--num", "2", "--steps", "3", "--out", str(out), "--quiet"]) == 0
    assert len(list(out.glob("*.png"))) == 2
