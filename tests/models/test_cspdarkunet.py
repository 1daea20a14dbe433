import inspect
import json

import pytest
import torch

from difforge.errors import ConfigError
from difforge.models import build, forward_gflops, registry
from difforge.models.cspdarkunet import CSPBlock, CSPDarkUNet
from difforge.models.layers import Attention2d
from tests.models.netkit import inputs, perturb


TINY = dict(base_channels=16, channel_mult=[1, 2, 2], csp_depth=[1, 1], attention_resolutions=[8], head_channels=8)


def make(**kw):
    torch.manual_seed(0)
    return perturb(CSPDarkUNet(**{**TINY, **kw}))


def test_default_iddm_layout_and_128px():
    net = build("cspdarkunet", image_size=64)
    assert [s.csp.fuse[0].out_channels for s in net.down] == [64, 128, 256, 512]  # IDDM's 32..512
    assert [len(s.csp.bottlenecks) for s in net.down] == [1, 3, 3, 1]
    assert [s.attn is not None for s in net.down] == [False, True, True, True]  # 32, 16, 8, 4 px
    small = CSPDarkUNet(image_size=128, base_channels=4, channel_mult=[1, 2, 2, 2], csp_depth=[0, 1, 0],
                        attention_resolutions=[16])
    x, t, _ = inputs(small, batch=1)
    with torch.no_grad():
        assert small(x, t).shape == (1, 3, 128, 128)
        assert small(torch.randn(1, 3, 32, 48), t).shape == (1, 3, 32, 48)


def test_csp_block_splits_into_partial_and_cross_branches():
    torch.manual_seed(0)
    block = perturb(CSPBlock(8, 8, emb_dim=4, n=2, act="silu", norm_groups=1, shortcut=True), 0.1)
    x, emb = torch.randn(2, 8, 4, 4), torch.randn(2, 4)
    with torch.no_grad():
        a = block.bottlenecks(block.part(x) + block.emb(emb)[:, :, None, None])
        expect = block.fuse(torch.cat([a, block.cross(x)], dim=1))
        assert torch.equal(block(x, emb), expect)
        block.emb.weight.zero_()
        block.emb.bias.zero_()
        other = block(x, torch.randn(2, 4))
        assert torch.equal(block(x, emb), other)  # the embedding enters through emb only


def test_attention_where_asked():
    net = CSPDarkUNet(image_size=32, **{**TINY, "attention_resolutions": [32, 8]})
    assert isinstance(net.stem_attn, Attention2d)
    assert [s.attn is not None for s in net.down] == [False, True]  # 16, 8 px
    assert [s.attn is not None for s in net.up] == [False, True]  # 16, 32 px


def test_contract_attributes_and_config():
    net = CSPDarkUNet(image_size=32, in_channels=1, num_classes=4, learn_sigma=True, **TINY)
    assert (net.in_channels, net.out_channels, net.num_classes, net.learn_sigma, net.image_size) == (1, 2, 4, True, 32)
    assert net.arch == "cspdarkunet"
    assert list(net.config) == list(inspect.signature(CSPDarkUNet).parameters)
    assert json.loads(json.dumps(net.config)) == net.config


@pytest.mark.parametrize(
    "key,value",
    [("act", "swish"), ("channel_mult", []), ("csp_depth", [1]), ("csp_depth", [1, -1]), ("learn_sigma", "no"),
     ("num_classes", -1), ("attention_resolutions", [0]), ("base_channels", 1)],
)
def test_invalid_values_name_the_option(key, value):
    with pytest.raises(ConfigError, match=key):
        build("cspdarkunet", image_size=16, **{**TINY, key: value})


def test_size_and_name_errors():
    with pytest.raises(ConfigError, match=r"cspdarkunet with 5 levels needs an image size divisible by 16; 32 or 48 would work, got 40"):
        registry.check_image_size("cspdarkunet", {}, 40)
    with pytest.raises(ConfigError, match="unknown network 'cspdarknet'.*cspdarkunet, cspdarkunet-small"):
        build("cspdarknet")


def test_channels_last_info_and_bf16():
    net = make(image_size=32, num_classes=2)
    assert forward_gflops(net) > 0
    x, t, y = inputs(net)
    with torch.no_grad():
        ref = net(x, t, y)
        cl = net.to(memory_format=torch.channels_last)
        out = cl(x.contiguous(memory_format=torch.channels_last), t, y)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, t, y)
    assert (low.float() - ref).norm() < 0.05 * ref.norm()
