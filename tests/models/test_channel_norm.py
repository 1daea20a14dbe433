"""``ChannelNorm`` (per-pixel LayerNorm over channels) and the UNet's ``norm`` option."""

import pytest
import torch
import torch.nn.functional as F

from difforge.errors import ConfigError
from difforge.models import UNet, build
from difforge.models.layers import ChannelNorm, make_norm
from tests.models.netkit import inputs, perturb

TINY = dict(base_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], head_channels=8)


def test_channel_norm_is_a_layer_norm_of_each_pixel_in_both_layouts():
    torch.manual_seed(0)
    norm = ChannelNorm(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = 3 * torch.randn(2, 6, 5, 7) + 1
    mean = x.mean(1, keepdim=True)
    var = (x - mean).square().mean(1, keepdim=True)
    ref = (x - mean) / torch.sqrt(var + 1e-6) * norm.weight[:, None, None] + norm.bias[:, None, None]
    out = norm(x)
    assert out.is_contiguous() and torch.allclose(out, ref, atol=1e-5)
    cl = norm(x.contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.allclose(cl, ref, atol=1e-5)


def test_one_pixel_cannot_change_how_the_others_are_normalised():
    """The property that removes droplet artefacts: GroupNorm fails it, ChannelNorm keeps it."""
    x = torch.randn(1, 8, 6, 6)
    spiked = x.clone()
    spiked[:, :, 0, -1] *= 100.0  # a huge activation at the top right corner
    rest = torch.ones(6, 6, dtype=torch.bool)
    rest[0, -1] = False
    for kind, unchanged in (("channel", True), ("group", False)):
        norm = make_norm(kind, 8, 4)
        with torch.no_grad():
            same = torch.allclose(norm(x)[..., rest], norm(spiked)[..., rest], atol=1e-5)
        assert same is unchanged, kind


def test_unet_norm_option():
    net = perturb(UNet(image_size=16, norm="channel", **TINY))
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    assert net.config["norm"] == "channel"
    x, t, y = inputs(net)
    with torch.no_grad():
        out = net(x, t, y)
        cl = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), t, y)
    assert torch.allclose(out, cl, atol=1e-4)
    rebuilt = build(net.arch, **net.config)
    assert rebuilt.state_dict().keys() == net.state_dict().keys()
    old = {k: v for k, v in net.config.items() if k != "norm"}  # a model file from before the option: GroupNorm
    assert any(isinstance(m, torch.nn.GroupNorm) for m in build(net.arch, **old).modules())
    with pytest.raises(ConfigError, match="norm"):
        UNet(image_size=16, norm="batch", **TINY)


def test_channel_norm_under_bf16_autocast_keeps_bf16_and_matches_fp32():
    norm = ChannelNorm(16)
    x = torch.randn(2, 16, 4, 4).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), F.layer_norm(x.permute(0, 2, 3, 1), (16,), eps=1e-6).permute(0, 3, 1, 2), atol=0.05)
