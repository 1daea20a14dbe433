"""Learned key/value registers in self-attention (``Attention2d(registers=r)``, UNet ``attn_registers``)."""

import math

import torch

from difforge.models import UNet, build
from difforge.models.layers import Attention2d
from tests.models.netkit import inputs, perturb

TINY = dict(base_channels=16, channel_mult=[1, 2, 2], num_res_blocks=1, attention_resolutions=[8], head_channels=8)


def test_registers_join_the_keys_and_values_of_every_image():
    torch.manual_seed(0)
    attn = perturb(Attention2d(16, head_channels=8, norm_groups=8, registers=3), scale=0.3)
    assert attn.registers.shape == (2, 2, 3, 8)
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        out = attn(x)
        b, c, h, w = x.shape
        tok = attn.norm(x).reshape(b, c, h * w).transpose(1, 2)
        q, k, v = (tok @ attn.qkv.weight.T + attn.qkv.bias).split(c, dim=-1)
        heads = lambda z: z.reshape(b, h * w, 2, 8).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        rk, rv = attn.registers  # (heads, 3, 8): the same for both images
        k = torch.cat([k, rk.expand(b, -1, -1, -1)], dim=2)
        v = torch.cat([v, rv.expand(b, -1, -1, -1)], dim=2)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
        assert a.shape[-1] == h * w + 3
        merged = (a @ v).transpose(1, 2).reshape(b, h * w, c) @ attn.proj.weight.T + attn.proj.bias
        ref = x + merged.transpose(1, 2).reshape(b, c, h, w)
        cl = attn(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(cl, ref, atol=1e-5)


def test_a_register_the_queries_ignore_changes_nothing():
    """A register key far below every query's scores gets no weight: the plain attention's output."""
    torch.manual_seed(0)
    plain = perturb(Attention2d(16, head_channels=8, norm_groups=8))
    with torch.no_grad():
        plain.qkv.bias[0:16:8] = 50.0  # every query's first component in each head is ~50
    reg = Attention2d(16, head_channels=8, norm_groups=8, registers=1)
    reg.load_state_dict({**plain.state_dict(), "registers": reg.registers.detach()}, strict=True)
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        reg.registers[0, :, :, 0] = -1e3  # scores ~ -5e4/sqrt(8) for every query: no weight
        reg.registers[1] = 100.0
        assert torch.allclose(reg(x), plain(x), atol=1e-5)
        reg.registers[0, :, :, 0] = 1e3  # now it takes all the weight: every position gets its value
        attended = reg.proj(torch.full((2, 16, 16), 100.0)).transpose(1, 2).reshape(2, 16, 4, 4)
        assert torch.allclose(reg(x), x + attended, atol=1e-3)


def test_unet_with_registers_starts_as_the_unet_without_and_learns_them():
    with_reg = UNet(image_size=16, num_classes=3, attn_registers=2, **TINY)
    without = UNet(image_size=16, num_classes=3, **TINY)
    names = {n for n, _ in with_reg.named_parameters()} - {n for n, _ in without.named_parameters()}
    assert names and all(n.endswith(".registers") for n in names)
    missing = with_reg.load_state_dict(without.state_dict(), strict=False).missing_keys
    assert set(missing) == names
    x, t, y = inputs(without)
    with torch.no_grad():  # untrained: attention's output projection is zero, so the registers change nothing yet
        assert torch.equal(with_reg(x, t, y), without(x, t, y))
    perturb(with_reg)
    with_reg(x, t, y).square().mean().backward()
    assert all(with_reg.get_parameter(n).grad.abs().sum() > 0 for n in names)


def test_the_option_is_in_the_config_and_old_configs_build_without_it():
    net = build("unet-tiny", image_size=64, patch_size=2, attn_registers=4)
    assert net.config["attn_registers"] == 4
    rebuilt = build(net.arch, **net.config)
    assert rebuilt.state_dict().keys() == net.state_dict().keys()
    old = {k: v for k, v in net.config.items() if k != "attn_registers"}  # a model file from before the option
    assert not any(k.endswith("registers") for k in build(net.arch, **old).state_dict())
