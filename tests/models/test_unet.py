import inspect
import json
import math

import pytest
import torch

from difforge.errors import ConfigError
from difforge.models import PRESETS, UNet, build, count_parameters, describe, forward_gflops, registry
from difforge.models.layers import Attention2d, group_norm, timestep_embedding
from tests.models.netkit import inputs, perturb


TINY = dict(base_channels=16, channel_mult=[1, 2, 2], num_res_blocks=1, attention_resolutions=[8], head_channels=8)


def make(**kw):
    torch.manual_seed(0)
    return perturb(UNet(**{**TINY, **kw}))


def test_128px_and_non_square():
    net = UNet(image_size=128, **{**TINY, "channel_mult": [1, 1, 2, 2]})
    x, t, _ = inputs(net, batch=1)
    with torch.no_grad():
        assert net(x, t).shape == (1, 3, 128, 128)
        assert net(torch.randn(1, 3, 32, 48), t).shape == (1, 3, 32, 48)


def test_contract_attributes_and_config():
    net = UNet(image_size=32, in_channels=1, num_classes=4, learn_sigma=True, **TINY)
    assert (net.in_channels, net.out_channels, net.num_classes, net.learn_sigma, net.image_size) == (1, 2, 4, True, 32)
    assert net.arch == "unet"
    params = list(inspect.signature(UNet).parameters)
    assert list(net.config) == params  # exactly the constructor kwargs
    assert json.loads(json.dumps(net.config)) == net.config


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 2.5, 999.0])
    emb = timestep_embedding(t, 8)
    freqs = [10000 ** (-i / 4) for i in range(4)]
    expect = [[math.cos(v * f) for f in freqs] + [math.sin(v * f) for f in freqs] for v in t.tolist()]
    assert torch.allclose(emb, torch.tensor(expect), atol=1e-4)


def test_class_embedding_changes_output_and_none_is_null_class():
    net = make(image_size=16, num_classes=3)
    x, t, _ = inputs(net)
    with torch.no_grad():
        out0 = net(x, t, torch.tensor([0, 0]))
        out1 = net(x, t, torch.tensor([1, 1]))
        null = net(x, t, torch.tensor([3, 3]))
        none = net(x, t, None)
    assert (out0 - out1).abs().max() > 1e-3
    assert torch.equal(none, null)
    assert net.label_embed.num_embeddings == 4


def test_unconditional_net_ignores_y():
    net = make(image_size=16)
    x, t, _ = inputs(net)
    with torch.no_grad():
        assert torch.equal(net(x, t, torch.tensor([0, 1])), net(x, t))


@pytest.mark.parametrize("name", ["unet", "unet-tiny"])
def test_rebuild_from_config(name):
    torch.manual_seed(0)
    net = perturb(build(name, image_size=16, num_classes=2, learn_sigma=True, base_channels=16, head_channels=8))
    config = json.loads(json.dumps(net.config))  # as a checkpoint stores it
    again = build(name, **config)
    assert again.config == net.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    again.load_state_dict(net.state_dict())
    x, t, y = inputs(net)
    with torch.no_grad():
        assert torch.equal(again(x, t, y), net(x, t, y))


def test_bad_image_size_message():
    expected = r"unet with 3 levels needs an image size divisible by 4; 68 or 72 would work, got 70"
    with pytest.raises(ConfigError, match=expected):
        UNet(image_size=70, **TINY)
    with pytest.raises(ConfigError, match=r"divisible by 8; 8 would work, got 4"):
        UNet(image_size=4)
    with pytest.raises(ConfigError, match=r"divisible by 8; 64 or 72 would work, got 70"):
        registry.check_image_size("unet", {}, 70)
    registry.check_image_size("unet-tiny", {}, 36)  # 3 levels: 36 is fine
    net = UNet(image_size=16, **TINY)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 3, 18, 16), torch.zeros(1))


@pytest.mark.parametrize(
    "key,value",
    [("act", "swish"), ("channel_mult", "abc"), ("channel_mult", []), ("num_res_blocks", 0), ("dropout", 1.5),
     ("learn_sigma", "yes"), ("num_classes", -1), ("attention_resolutions", [8, 0])],
)
def test_invalid_values_name_the_option(key, value):
    with pytest.raises(ConfigError, match=key):
        build("unet", **{**TINY, key: value})


def test_odd_channel_counts_adapt_groups_and_heads():
    net = make(image_size=16, base_channels=24, head_channels=32, in_channels=2)
    x, t, _ = inputs(net)
    assert net(x, t).shape == (2, 2, 16, 16)
    assert group_norm(48).num_groups == 16 and group_norm(96).num_groups == 32


def test_channels_last_matches_nchw():
    net = make(image_size=32, num_classes=2)
    x, t, y = inputs(net)
    with torch.no_grad():
        ref = net(x, t, y)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(x.contiguous(memory_format=torch.channels_last), t, y)
        mixed = net_cl(x, t, y)  # NCHW input to a channels_last net
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert mixed.is_contiguous()
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert torch.allclose(mixed, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast_forward_and_backward(channels_last):
    net = make(image_size=16, num_classes=2)
    x, t, y = inputs(net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = net(x, t, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, y)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).norm() < 0.05 * ref.norm()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_attention_matches_naive_reference():
    torch.manual_seed(0)
    attn = perturb(Attention2d(32, head_channels=8, norm_groups=8))
    assert attn.num_heads == 4
    x = torch.randn(2, 32, 4, 6)
    with torch.no_grad():
        out = attn(x)
        b, c, h, w = x.shape
        tok = attn.norm(x).reshape(b, c, h * w).transpose(1, 2)
        q, k, v = (tok @ attn.qkv.weight.T + attn.qkv.bias).split(c, dim=-1)
        heads = lambda z: z.reshape(b, h * w, 4, 8).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1) @ v
        merged = a.transpose(1, 2).reshape(b, h * w, c) @ attn.proj.weight.T + attn.proj.bias
        ref = x + merged.transpose(1, 2).reshape(b, c, h, w)
        out_cl = attn(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out_cl, ref, atol=1e-5)


def test_info():
    net = UNet(image_size=16, num_classes=3, **TINY)
    assert count_parameters(net) == sum(p.numel() for p in net.parameters()) > 0
    gf = forward_gflops(net)
    no_attn = UNet(image_size=16, num_classes=3, **{**TINY, "attention_resolutions": []})
    # the attention layers at 8 px count their q k^T and attn v products too
    assert gf > forward_gflops(no_attn) > 0
    assert forward_gflops(net, batch=2) == pytest.approx(gf)
    text = describe(net)
    assert "parameters" in text and "16 x 16" in text and "3 (+ null class)" in text


def test_presets_are_registered():
    for name, overrides in PRESETS.items():
        net = build(name, image_size=32)
        assert all(net.config[k] == v for k, v in overrides.items())


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_patch_size_is_unshuffle_then_the_folded_network_then_shuffle(learn_sigma):
    """A patch-2 UNet at 32 px is, weight for weight, a plain UNet at 16 px on the 2x2-folded image
    (4C channels) whose 4C' output channels are unfolded: the reference is built independently and
    loaded with the patch network's weights (identical shapes prove the folded widths)."""
    import torch.nn.functional as F

    net = make(image_size=32, in_channels=3, num_classes=3, patch_size=2)
    plain = UNet(**{**TINY, "image_size": 16, "in_channels": 12, "num_classes": 3})
    state = net.state_dict()
    if learn_sigma:  # 2C outputs: eps then the variance interpolation, each unfolded from 4 channels
        net = make(image_size=32, in_channels=3, num_classes=3, patch_size=2, learn_sigma=True)
        plain = UNet(**{**TINY, "image_size": 16, "in_channels": 12, "num_classes": 3, "learn_sigma": False})
        state = net.state_dict()
        plain.out[-1] = torch.nn.Conv2d(plain.out[-1].in_channels, 24, 3, padding=1)
    plain.load_state_dict(state)
    x, t, y = inputs(net)
    with torch.no_grad():
        got = net(x, t, y)
        want = F.pixel_shuffle(plain(F.pixel_unshuffle(x, 2), t, y), 2)
    assert got.shape == (2, 6 if learn_sigma else 3, 32, 32)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert net.config["patch_size"] == 2 and build("unet", **net.config).patch_size == 2


def test_patch_size_image_size_rules():
    with pytest.raises(ConfigError, match=r"unet with 3 levels and patch size 2 needs an image size divisible by 8; 32 or 40 would work, got 36"):
        UNet(image_size=36, patch_size=2, **TINY)
    with pytest.raises(ConfigError, match="divisible by 8"):
        registry.check_image_size("unet-tiny", {"patch_size": 2}, 36)
    with pytest.raises(ConfigError, match="patch_size"):
        UNet(image_size=32, patch_size=0, **TINY)
    net = UNet(image_size=64, patch_size=2, **TINY)
    assert net(torch.randn(1, 3, 64, 48), torch.zeros(1)).shape == (1, 3, 64, 48)
    with pytest.raises(ValueError, match="patch size 2 needs H and W divisible by 8"):
        net(torch.randn(1, 3, 36, 32), torch.zeros(1))
