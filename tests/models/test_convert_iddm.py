"""IDDM checkpoints: an IDDM-format dict built here (IDDM's key names and settings, torch.save)
converts to ``iddm-unet``, gives the source network's outputs, and samples."""

import pytest
import torch
import torch.nn as nn

from difforge.errors import CheckpointError
from difforge.models.convert_iddm import convert_iddm_checkpoint
from difforge.models.iddm_unet import IDDMUNet
from difforge.models.registry import build

CLASSES = ["crack", "scratch", "dent"]


def iddm_checkpoint(path, conditional=True, act="silu", **extra):
    """What IDDM's train.py saves: label table without a null row, settings beside the weights."""
    torch.manual_seed(0)
    net = IDDMUNet(image_size=16, base_channels=8, act=act, num_classes=len(CLASSES) if conditional else 0)
    for p in net.parameters():  # no zero-initialised layers: every weight matters to the output
        nn.init.normal_(p, std=0.2)
    sd = net.state_dict()
    if conditional:
        sd["label_emb.weight"] = sd["label_emb.weight"][:-1].clone()  # IDDM's table: num_classes rows
    ckpt = {"start_epoch": 7, "model": {k: v + 1 for k, v in sd.items()}, "ema_model": sd, "optimizer": {"state": {}, "param_groups": []},
            "num_classes": len(CLASSES) if conditional else None, "classes_name": CLASSES if conditional else None,
            "conditional": conditional, "image_size": 16, "sample": "ddpm", "network": "unet", "act": act, "mode": "train", **extra}
    torch.save(ckpt, path)
    return net


@pytest.mark.parametrize("act", ["silu", "lrelu"])
def test_converts_exactly(tmp_path, act):
    src = iddm_checkpoint(tmp_path / "ckpt_last.pt", act=act).eval()
    converted, meta = convert_iddm_checkpoint(tmp_path / "ckpt_last.pt")
    assert meta["network"]["name"] == "iddm-unet" and meta["data"]["class_names"] == CLASSES
    assert meta["converted"]["null_class_trained"] and meta["diffusion"]["noise_schedule"] == "linear"
    net = build("iddm-unet", **converted.config).eval()
    net.load_state_dict(converted.state_dict)  # strict: every key consumed, none missing
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 900]), torch.tensor([0, 2])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y), src(x, t, y))
        null = net(x, t)  # the null row is zero: IDDM's y=None adds no class embedding
    assert torch.count_nonzero(converted.state_dict["label_emb.weight"][-1]) == 0
    assert not torch.allclose(null, net(x, t, y))


def test_attention_matches_torch_multihead_attention():
    """The attention block computes what IDDM's nn.MultiheadAttention does with the same weights."""
    from difforge.models.iddm_unet import SelfAttention

    torch.manual_seed(0)
    ours = SelfAttention(16, "silu")
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    ref.load_state_dict(ours.mha.state_dict())
    s = torch.randn(2, 9, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.mha(s), ref(s, s, s)[0])


def test_unconditional_and_refusals(tmp_path):
    iddm_checkpoint(tmp_path / "u.pt", conditional=False)
    converted, meta = convert_iddm_checkpoint(tmp_path / "u.pt")
    assert converted.config["num_classes"] == 0 and meta["data"]["class_names"] == []
    iddm_checkpoint(tmp_path / "c.pt", network="cspdarkunet")
    with pytest.raises(CheckpointError, match="cspdarkunet"):
        convert_iddm_checkpoint(tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "u.pt", weights_only=True)
    ckpt["ema_model"]["extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="unconsumed: extra.weight"):
        convert_iddm_checkpoint(tmp_path / "x.pt")


def test_pickled_objects_refused(tmp_path):
    from fractions import Fraction  # any class outside torch's weights_only allow-list

    torch.save({"model": {}, "extra": Fraction(1, 3)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        convert_iddm_checkpoint(tmp_path / "evil.pt")


def test_cli_convert_then_sample(tmp_path, capsys):
    from difforge.cli.main import main

    iddm_checkpoint(tmp_path / "ckpt_last.pt")
    out = tmp_path / "iddm.safetensors"
    assert main(["convert", "--from", "iddm", str(tmp_path / "ckpt_last.pt"), str(out)]) == 0
    assert "iddm-unet 16px" in capsys.readouterr().out
    rc = main(["generate", "--conditional", "True", "--num_images", "2", "--class_name", "dent", "--image_size", "16",
               "--weight_path", str(out), "--result_path", str(tmp_path), "--generate_name", "g", "--steps", "2", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert list((tmp_path / "g").glob("**/*.png"))
    rc = main(["sample", "--weight_path", str(tmp_path / "ckpt_last.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and f"difforge convert {tmp_path / 'ckpt_last.pt'} OUT.safetensors --from iddm\n" in err
