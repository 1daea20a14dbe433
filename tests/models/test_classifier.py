"""The noisy classifier: contract, rebuild from its config, OpenAI names, and the attention pool against a reference."""

import math

import pytest
import torch

from difforge.errors import ConfigError
from difforge.models import registry
from difforge.models.classifier import PRESETS, AttentionPool2d


def _net(**kw):
    torch.manual_seed(0)
    opts = dict(image_size=16, in_channels=3, num_classes=4)
    opts.update(kw)
    return registry.build("classifier-tiny", **opts)


def test_logits_shape_and_time_conditioning():
    net = _net().eval()
    with torch.no_grad():
        for p in net.parameters():  # zero-init branches would hide the time input
            p.add_(0.05 * torch.randn_like(p))
        x = torch.randn(3, 3, 16, 16)
        a = net(x, torch.tensor([10, 10, 10]))
        b = net(x, torch.tensor([900, 900, 900]))
        c = net(x, 10)  # a scalar t serves the whole batch
        d = net(x, torch.tensor([10.25, 10.25, 10.25]))  # fractional t: continuous embedding
    assert a.shape == (3, 4)
    assert torch.equal(a, c)
    assert (a - b).abs().max() > 1e-3
    assert 0 < (a - d).abs().max() < (a - b).abs().max()


def test_rebuilds_from_its_config():
    net = _net(num_channels=16)
    again = registry.build(net.arch, **net.config)
    again.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor([1, 2])), again(x, torch.tensor([1, 2])))
    assert set(PRESETS) <= set(registry.available())


def test_parameter_names_follow_openai_encoder():
    keys = set(registry.build("classifier", image_size=32, num_classes=10).state_dict())
    for k in ("time_embed.0.weight", "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight",
              "middle_block.1.qkv.weight", "out.0.weight", "out.2.positional_embedding", "out.2.qkv_proj.weight", "out.2.c_proj.bias"):
        assert k in keys, k
    assert registry.build("classifier", image_size=32, num_classes=10).config["resblock_updown"] is True  # guided-diffusion's default


def test_attention_pool_matches_a_direct_implementation():
    torch.manual_seed(1)
    pool = AttentionPool2d(spatial=4, ch=8, num_heads=2, out_dim=3)
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        got = pool(x)
        tokens = x.reshape(2, 8, 16)
        tokens = torch.cat([tokens.mean(-1, keepdim=True), tokens], -1) + pool.positional_embedding  # (B, C, 17)
        qkv = torch.einsum("oc,bcn->bon", pool.qkv_proj.weight[:, :, 0], tokens) + pool.qkv_proj.bias[:, None]
        q, k, v = qkv.split(8, dim=1)
        heads = []
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            w = torch.softmax(torch.einsum("bcq,bck->bqk", q[:, sl], k[:, sl]) / math.sqrt(4), dim=-1)
            heads.append(torch.einsum("bqk,bck->bcq", w, v[:, sl]))
        out = torch.cat(heads, 1)
        ref = (torch.einsum("oc,bcn->bon", pool.c_proj.weight[:, :, 0], out) + pool.c_proj.bias[:, None])[:, :, 0]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_bad_options_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="divisible by 4"):
        registry.build("classifier-tiny", image_size=18, num_classes=3)
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 2"):
        registry.build("classifier-tiny", image_size=16, num_classes=1)
    with pytest.raises(ConfigError, match="divisible by 4"):
        registry.check_image_size("classifier-tiny", {}, 18)
    with pytest.raises(ValueError, match="16x16 final feature map|4x4 final feature map"):
        _net()(torch.randn(1, 3, 32, 32), 5)
