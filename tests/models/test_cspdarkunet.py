import inspect
import json
import math

import pytest
import torch
import torch.nn.functional as F

from difforge.errors import ConfigError
from difforge.models import build, forward_gflops, registry
from difforge.models.cspdarkunet import CSPBlock, CSPDarkUNet
from difforge.models.layers import Attention2d
from tests.models.netkit import inputs, perturb
from difforge.train.checkpoint import load_model_file, load_weights_into, save_model_file


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


def test_untrained_net_predicts_zero_and_none_is_null_class():
    net = CSPDarkUNet(image_size=16, **TINY)
    x, t, _ = inputs(net)
    assert net(x, t).abs().max() == 0
    net = make(image_size=16, num_classes=3)
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t, torch.tensor([3, 3])))
        assert (net(x, t, torch.tensor([0, 0])) - net(x, t, torch.tensor([1, 1]))).abs().max() > 1e-3


def test_fractional_timesteps():
    net = make(image_size=16)
    x, _, _ = inputs(net, batch=1)
    with torch.no_grad():
        out = {t: net(x, torch.tensor([t])) for t in (10.0, 10.5, 11.0)}
        assert torch.equal(net(x, torch.tensor([10])), out[10.0])
        assert not torch.allclose(out[10.5], out[10.0]) and not torch.allclose(out[10.5], out[11.0])
        mid = (out[10.0] + out[11.0]) / 2
        assert (out[10.5] - mid).abs().max() < (out[11.0] - out[10.0]).abs().max()


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


def test_training_reduces_loss():
    torch.manual_seed(0)
    net = CSPDarkUNet(image_size=16, **TINY)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    x0 = torch.stack([torch.sin(3 * xx + k) * torch.cos(2 * yy - k) for k in range(8)])[:, None].expand(8, 3, 16, 16)
    losses = []
    for _ in range(15):
        t = torch.randint(0, 1000, (8,), generator=g)
        ab = torch.cos((t.float() / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
        noise = torch.randn(x0.shape, generator=g)
        xt = ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * noise
        loss = F.mse_loss(net(xt, t), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:3]) / 3


def test_model_file_round_trip(tmp_path):
    net = make(image_size=16, num_classes=3, learn_sigma=True)
    meta = {"network": {"name": "cspdarkunet", "config": net.config}, "diffusion": {}, "data": {}}
    save_model_file(tmp_path / "m.safetensors", net.state_dict(), meta)
    tensors, meta2 = load_model_file(tmp_path / "m.safetensors")
    again = registry.build(meta2["network"]["name"], **meta2["network"]["config"])
    load_weights_into(again, tensors, "m.safetensors")
    x, t, y = inputs(net)
    with torch.no_grad():
        assert torch.equal(again(x, t, y), net(x, t, y))


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
