"""Conversion from OpenAI ADM and DiT checkpoints, with state dicts written from THEIR module trees.

The expected names and shapes below are derived from guided-diffusion's ``UNetModel.__init__``
and DiT's ``models.py`` (their construction loops transcribed by hand), independently of
difforge's networks, so a drift in our parameter names shows up here.
"""

import argparse
import json

import pytest
import torch

from difforge.cli.main import main
from difforge.errors import CheckpointError, ConfigError
from difforge.models import build
from difforge.models.convert import (
    REFUSED, convert_dit, convert_dit_full, convert_openai_adm, convert_openai_adm_full, export_dit,
    export_openai_adm, load_torch_state_dict, options_from_config,
)
from difforge.pipeline import Pipeline
from difforge.modelfile import read_metadata


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- OpenAI's module tree ---------------------------------------------------------------------
def openai_adm_shapes(image_size, in_channels, model_channels, num_res_blocks, attention_resolutions, channel_mult,
                      num_classes=None, learn_sigma=False, use_scale_shift_norm=True, resblock_updown=False):
    """{name: shape} of guided-diffusion's UNetModel (attention_resolutions in pixels, as its flags)."""
    shapes = {}
    emb = 4 * model_channels
    attention_ds = [image_size // r for r in attention_resolutions]

    def res(prefix, ch, out, updown=False):
        shapes.update({
            f"{prefix}.in_layers.0.weight": (ch,), f"{prefix}.in_layers.0.bias": (ch,),
            f"{prefix}.in_layers.2.weight": (out, ch, 3, 3), f"{prefix}.in_layers.2.bias": (out,),
            f"{prefix}.emb_layers.1.weight": (2 * out if use_scale_shift_norm else out, emb),
            f"{prefix}.emb_layers.1.bias": (2 * out if use_scale_shift_norm else out,),
            f"{prefix}.out_layers.0.weight": (out,), f"{prefix}.out_layers.0.bias": (out,),
            f"{prefix}.out_layers.3.weight": (out, out, 3, 3), f"{prefix}.out_layers.3.bias": (out,),
        })
        if out != ch:
            shapes.update({f"{prefix}.skip_connection.weight": (out, ch, 1, 1), f"{prefix}.skip_connection.bias": (out,)})

    def attn(prefix, ch):
        shapes.update({
            f"{prefix}.norm.weight": (ch,), f"{prefix}.norm.bias": (ch,),
            f"{prefix}.qkv.weight": (3 * ch, ch, 1), f"{prefix}.qkv.bias": (3 * ch,),
            f"{prefix}.proj_out.weight": (ch, ch, 1), f"{prefix}.proj_out.bias": (ch,),
        })

    shapes.update({"time_embed.0.weight": (emb, model_channels), "time_embed.0.bias": (emb,),
                   "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,)})
    if num_classes is not None:
        shapes["label_emb.weight"] = (num_classes, emb)
    ch = int(channel_mult[0] * model_channels)
    shapes.update({"input_blocks.0.0.weight": (ch, in_channels, 3, 3), "input_blocks.0.0.bias": (ch,)})
    chans, ds, n = [ch], 1, 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            out = int(mult * model_channels)
            res(f"input_blocks.{n}.0", ch, out)
            ch = out
            if ds in attention_ds:
                attn(f"input_blocks.{n}.1", ch)
            chans.append(ch)
            n += 1
        if level != len(channel_mult) - 1:
            if resblock_updown:
                res(f"input_blocks.{n}.0", ch, ch)
            else:
                shapes.update({f"input_blocks.{n}.0.op.weight": (ch, ch, 3, 3), f"input_blocks.{n}.0.op.bias": (ch,)})
            chans.append(ch)
            ds *= 2
            n += 1
    res("middle_block.0", ch, ch)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    n = 0
    for level, mult in list(enumerate(channel_mult))[::-1]:
        for i in range(num_res_blocks + 1):
            out = int(model_channels * mult)
            res(f"output_blocks.{n}.0", ch + chans.pop(), out)
            ch, m = out, 1
            if ds in attention_ds:
                attn(f"output_blocks.{n}.1", ch)
                m = 2
            if level and i == num_res_blocks:
                if resblock_updown:
                    res(f"output_blocks.{n}.{m}", ch, ch)
                else:
                    shapes.update({f"output_blocks.{n}.{m}.conv.weight": (ch, ch, 3, 3),
                                   f"output_blocks.{n}.{m}.conv.bias": (ch,)})
                ds //= 2
            n += 1
    out_ch = 2 * in_channels if learn_sigma else in_channels
    shapes.update({"out.0.weight": (ch,), "out.0.bias": (ch,), "out.2.weight": (out_ch, ch, 3, 3), "out.2.bias": (out_ch,)})
    return shapes


def dit_shapes(input_size, patch_size, in_channels, hidden_size, depth, num_classes=10, learn_sigma=True, mlp_ratio=4.0):
    """{name: shape} of DiT's models.DiT (with class_dropout_prob > 0: num_classes + 1 label rows)."""
    d, p = hidden_size, patch_size
    out = in_channels * (2 if learn_sigma else 1)
    h = int(d * mlp_ratio)
    shapes = {
        "pos_embed": (1, (input_size // p) ** 2, d),
        "x_embedder.proj.weight": (d, in_channels, p, p), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (num_classes + 1, d),
        "final_layer.linear.weight": (p * p * out, d), "final_layer.linear.bias": (p * p * out,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    for i in range(depth):
        shapes.update({
            f"blocks.{i}.attn.qkv.weight": (3 * d, d), f"blocks.{i}.attn.qkv.bias": (3 * d,),
            f"blocks.{i}.attn.proj.weight": (d, d), f"blocks.{i}.attn.proj.bias": (d,),
            f"blocks.{i}.mlp.fc1.weight": (h, d), f"blocks.{i}.mlp.fc1.bias": (h,),
            f"blocks.{i}.mlp.fc2.weight": (d, h), f"blocks.{i}.mlp.fc2.bias": (d,),
            f"blocks.{i}.adaLN_modulation.1.weight": (6 * d, d), f"blocks.{i}.adaLN_modulation.1.bias": (6 * d,),
        })
    return shapes


def random_state_dict(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: 0.1 * torch.randn(s, generator=g) for k, s in shapes.items()}


ADM_TINY = dict(image_size=16, in_channels=3, model_channels=32, num_res_blocks=1, attention_resolutions=[8],
                channel_mult=[1, 2], num_classes=4, learn_sigma=True)
ADM_OPTIONS = dict(image_size=16, num_res_blocks=1, attention_resolutions=[8], channel_mult=[1, 2], num_heads=2)


def xty(net, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, net.in_channels, net.image_size, net.image_size, generator=g)
    t = torch.rand(batch, generator=g) * 999
    y = torch.randint(0, net.num_classes, (batch,), generator=g) if net.num_classes else None
    return x, t, y


@pytest.mark.parametrize("updown", [False, True])
def test_adm_every_openai_key_consumed_and_shape_matched(updown):
    shapes = openai_adm_shapes(**ADM_TINY, resblock_updown=updown)
    sd = random_state_dict(shapes)
    out = convert_openai_adm_full(sd, {**ADM_OPTIONS, "resblock_updown": updown})
    net = build("adm", **out.config)
    assert set(net.state_dict()) == set(shapes)  # 1:1 names
    net.load_state_dict(out.state_dict)  # strict: every key, every shape
    assert out.config["num_classes"] == 4 and out.config["learn_sigma"] and out.config["num_channels"] == 32
    assert not out.null_class_trained
    table = out.state_dict["label_emb.weight"]
    assert table.shape == (5, 128) and torch.allclose(table[4], sd["label_emb.weight"].mean(0))
    x, t, y = xty(net)
    with torch.no_grad():
        assert torch.isfinite(net(x, t, y)).all() and torch.isfinite(net(x, t)).all()


def test_adm_unconditional_and_default_channel_mult():
    shapes = openai_adm_shapes(64, 3, 32, 1, [16], [1, 2, 3, 4])  # OpenAI's default mult for 64 px
    sd, cfg = convert_openai_adm(random_state_dict(shapes), {"image_size": 64, "num_res_blocks": 1,
                                                              "attention_resolutions": [16], "num_heads": 1})
    assert cfg["channel_mult"] == [1, 2, 3, 4] and cfg["num_classes"] == 0 and not cfg["learn_sigma"]
    assert "label_emb.weight" not in sd


def test_adm_mismatches_are_listed():
    sd = random_state_dict(openai_adm_shapes(**ADM_TINY))
    with pytest.raises(CheckpointError, match=r"shape mismatch: output_blocks\.1\.0\.in_layers\.0\.weight \(96,\) \(expected \(128,\)\).*"
                       r"missing: input_blocks\.2\.0\.in_layers.*and 72 more; unconsumed: input_blocks\.2\.0\.op\.weight"):
        convert_openai_adm(sd, {**ADM_OPTIONS, "num_res_blocks": 2})
    extra = dict(sd, **{"input_blocks.9.9.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unconsumed: input_blocks\.9\.9\.weight"):
        convert_openai_adm(extra, ADM_OPTIONS)
    missing = {k: v for k, v in sd.items() if k != "middle_block.1.qkv.bias"}
    with pytest.raises(CheckpointError, match=r"missing: middle_block\.1\.qkv\.bias"):
        convert_openai_adm(missing, ADM_OPTIONS)
    with pytest.raises(ConfigError, match="in_channels=1 contradicts the checkpoint.*in_channels=3"):
        convert_openai_adm(sd, {**ADM_OPTIONS, "in_channels": 1})
    with pytest.raises(ConfigError, match="needs image_size"):
        convert_openai_adm(sd, {})
    with pytest.raises(CheckpointError, match="not a openai-adm checkpoint"):
        convert_openai_adm(random_state_dict(dit_shapes(16, 4, 4, 32, 2)), ADM_OPTIONS)


@pytest.mark.parametrize("new_order", [False, True])
def test_adm_export_convert_round_trip(new_order):
    torch.manual_seed(0)
    net = build("adm", **{**ADM_OPTIONS, "num_channels": 32, "num_classes": 4, "learn_sigma": True,
                          "use_new_attention_order": new_order})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    exported = export_openai_adm(net)
    assert {k: tuple(v.shape) for k, v in exported.items()} == openai_adm_shapes(**ADM_TINY)
    sd, cfg = convert_openai_adm(exported, {**ADM_OPTIONS, "use_new_attention_order": new_order})
    again = build("adm", **cfg)
    again.load_state_dict(sd)
    x, t, y = xty(net)
    with torch.no_grad():
        assert torch.equal(again(x, t, y), net(x, t, y))


def test_dit_every_key_consumed_and_config_read_off_the_weights():
    shapes = dit_shapes(16, 4, 4, 32, 2, num_classes=10, learn_sigma=True)
    sd = random_state_dict(shapes)
    from difforge.models.dit import sincos_pos_embed

    sd["pos_embed"] = sincos_pos_embed(32, 4, 4)[None]
    out = convert_dit_full(sd, {"num_heads": 2})
    assert out.null_class_trained
    assert {k: out.config[k] for k in ("image_size", "in_channels", "patch_size", "hidden_size", "depth", "num_classes",
                                       "learn_sigma", "mlp_ratio")} == dict(image_size=16, in_channels=4, patch_size=4,
                                                                            hidden_size=32, depth=2, num_classes=10,
                                                                            learn_sigma=True, mlp_ratio=4.0)
    net = build("dit", **out.config)
    assert set(net.state_dict()) == set(shapes)
    net.load_state_dict(out.state_dict)
    x, t, y = xty(net)
    with torch.no_grad():
        assert torch.isfinite(net(x, t, y)).all()
    bad = dict(sd, pos_embed=torch.zeros(1, 16, 32))
    with pytest.raises(CheckpointError, match="not DiT's fixed 2-D sin-cos"):
        convert_dit(bad, {"num_heads": 2})
    with pytest.raises(ConfigError, match="needs num_heads"):
        convert_dit(sd)
    with pytest.raises(ConfigError, match="patch_size=2 contradicts"):
        convert_dit(sd, {"num_heads": 2, "patch_size": 2})
    # a label table without a null row (class dropout 0): a mean row is appended
    out = convert_dit_full(sd, {"num_heads": 2, "num_classes": 11})
    assert not out.null_class_trained and out.state_dict["y_embedder.embedding_table.weight"].shape[0] == 12


def test_dit_export_convert_round_trip_with_preset_sizes():
    torch.manual_seed(0)
    net = build("dit", image_size=16, in_channels=4, patch_size=2, hidden_size=384, depth=1, num_heads=6,
                num_classes=3, learn_sigma=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    exported = export_dit(net)
    assert {k: tuple(v.shape) for k, v in exported.items()} == dit_shapes(16, 2, 4, 384, 1, num_classes=3)
    sd, cfg = convert_dit(exported)  # 384 wide: DiT-S, 6 heads
    assert cfg["num_heads"] == 6
    again = build("dit", **cfg)
    again.load_state_dict(sd)
    x, t, y = xty(net)
    with torch.no_grad():
        assert torch.equal(again(x, t, y), net(x, t, y))


class Payload:
    def __init__(self):
        self.w = torch.zeros(1)


def test_loading_is_weights_only_and_unwraps(tmp_path):
    sd = {"a.weight": torch.ones(2)}
    torch.save({"model": sd}, tmp_path / "m.pt")
    assert load_torch_state_dict(tmp_path / "m.pt").keys() == sd.keys()
    # DiT's train.py: model, ema, opt and argparse args; ema wins
    torch.save({"model": {"x": torch.zeros(1)}, "ema": sd, "opt": {"state": {}, "param_groups": []},
                "args": argparse.Namespace(model="DiT-XL/2")}, tmp_path / "train.pt")
    assert torch.equal(load_torch_state_dict(tmp_path / "train.pt")["a.weight"], sd["a.weight"])
    torch.save({"module.a.weight": torch.ones(2)}, tmp_path / "ddp.pt")
    assert list(load_torch_state_dict(tmp_path / "ddp.pt")) == ["a.weight"]
    torch.save({"w": torch.ones(1), "obj": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=rf"evil.pt: {REFUSED} \(it holds a pickled object of .*Payload"):
        load_torch_state_dict(tmp_path / "evil.pt")
    torch.save({"w": torch.ones(1), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match=rf"{REFUSED} \(non-tensor entries: step\)"):
        load_torch_state_dict(tmp_path / "mixed.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=REFUSED):
        load_torch_state_dict(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torch_state_dict(tmp_path / "nope.pt")


def test_options_from_openai_flags():
    net, extra = options_from_config("openai-adm", {
        "attention_resolutions": "32,16,8", "class_cond": "True", "diffusion_steps": 4000, "image_size": 64,
        "learn_sigma": True, "noise_schedule": "cosine", "num_channels": 128, "num_res_blocks": 3, "use_fp16": True,
        "channel_mult": "", "rescale_timesteps": True, "dropout": "0.1",
    })
    assert net == {"attention_resolutions": [32, 16, 8], "num_classes": None, "image_size": 64, "learn_sigma": True,
                   "num_channels": 128, "num_res_blocks": 3, "channel_mult": None, "dropout": 0.1, "timestep_scale": 0.25}
    assert extra == {"diffusion_steps": 4000, "noise_schedule": "cosine", "rescale_timesteps": True}
    with pytest.raises(ConfigError, match="unknown openai-adm option 'num_chanels'"):
        options_from_config("openai-adm", {"num_chanels": 3})
    assert options_from_config("dit", {"input_size": 32, "class_dropout_prob": 0.1})[0] == {"image_size": 32}


def test_cli_convert_adm_then_sample_pipeline(tmp_path, capsys):
    torch.manual_seed(0)
    sd = random_state_dict(openai_adm_shapes(**ADM_TINY))
    torch.save(sd, tmp_path / "adm.pt")
    config = {**ADM_OPTIONS, "class_cond": True, "learn_sigma": True, "noise_schedule": "cosine"}
    (tmp_path / "flags.json").write_text(json.dumps(config))
    out = tmp_path / "adm.safetensors"
    rc = main(["convert", str(tmp_path / "adm.pt"), str(out), "--from", "openai-adm", "--config", str(tmp_path / "flags.json"),
               "--class-names", "a,b,c,d"])
    assert rc == 0 and "sample with --cfg 1" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["network"]["name"] == "adm"
    assert meta["diffusion"] == {"diffusion_steps": 1000, "noise_schedule": "cosine", "target": "eps", "learn_sigma": True}
    assert meta["data"] == {"image_size": 16, "channels": 3, "class_names": ["a", "b", "c", "d"]}
    assert meta["converted"]["null_class_trained"] is False
    pipe = Pipeline.from_checkpoint(out, device="cpu", precision="fp32")
    ref, _ = convert_openai_adm(sd, {**ADM_OPTIONS, "num_classes": 4})
    net = build("adm", **meta["network"]["config"])
    net.load_state_dict(ref)
    x, t, y = xty(net)
    with torch.no_grad():
        assert torch.equal(pipe.net(x, t, y), net(x, t, y))
    assert main(["convert", str(tmp_path / "adm.pt"), str(out), "--from", "openai-adm", "--config", str(tmp_path / "flags.json")]) == 2
    assert "exists" in capsys.readouterr().err


def test_cli_convert_dit_preset_and_refusal(tmp_path, capsys):
    net = build("dit-s/4", image_size=16, in_channels=4, num_classes=3, learn_sigma=True, depth=1)
    torch.save({"ema": export_dit(net), "args": argparse.Namespace(model="DiT-S/4")}, tmp_path / "dit.pt")
    out = tmp_path / "dit.safetensors"
    # the preset says depth 12: the one block in the file does not fit
    assert main(["convert", str(tmp_path / "dit.pt"), str(out), "--from", "dit", "--config", "dit-s/4"]) == 2
    assert "depth=12 contradicts the checkpoint" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "dit.pt"), str(out), "--from", "dit", "--config", "dit"]) == 0
    meta = read_metadata(out)
    assert meta["data"]["class_names"] == ["0", "1", "2"] and meta["converted"]["null_class_trained"] is True
    assert meta["network"]["config"]["num_heads"] == 6 and meta["diffusion"]["learn_sigma"] is True
    torch.save({"w": torch.ones(1), "obj": Payload()}, tmp_path / "evil.pt")
    assert main(["convert", str(tmp_path / "evil.pt"), str(tmp_path / "e.safetensors"), "--from", "dit"]) == 2
    err = capsys.readouterr().err
    assert REFUSED in err and len(err.strip().splitlines()) == 1
