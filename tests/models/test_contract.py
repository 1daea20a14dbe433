"""The denoising-network contract, checked for every network family the same way.

``net(x, t, y) -> out``: x (B, C, H, W), fractional t, y class indices or None (= the null
class); out has C channels, or 2C when the network also predicts the variance (learn_sigma), at
x's size; an untrained network predicts zero; a model file rebuilds the network exactly; a few
optimizer steps on a known signal lower the eps loss.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from difforge.models.adm import ADM
from difforge.models.cspdarkunet import CSPDarkUNet
from difforge.models.dit import DiT
from difforge.models.unet import UNet
from difforge.models import registry
from difforge.modelfile import load_model_file, load_weights_into, save_model_file
from tests.models.netkit import inputs, perturb

# (class, tiny options, options that depend on the image size); the per-family details of the
# other tests are in TRAINING / ROUND_TRIP below
FAMILIES = {
    "unet": (UNet, dict(base_channels=16, channel_mult=[1, 2, 2], num_res_blocks=1, attention_resolutions=[8], head_channels=8), None),
    "adm": (ADM, dict(num_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], num_head_channels=8), None),
    "cspdarkunet": (CSPDarkUNet, dict(base_channels=16, channel_mult=[1, 2, 2], csp_depth=[1, 1], attention_resolutions=[8], head_channels=8), None),
    "dit": (DiT, dict(hidden_size=32, depth=2, num_heads=2), lambda size: {"patch_size": 2 if size == 16 else 4}),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("num_classes", [0, 5])
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_output_shape(family, size, channels, num_classes, learn_sigma):
    cls, tiny, per_size = FAMILIES[family]
    torch.manual_seed(0)
    net = perturb(cls(image_size=size, in_channels=channels, num_classes=num_classes, learn_sigma=learn_sigma,
                      **tiny, **(per_size(size) if per_size else {})))
    x, t, y = inputs(net)
    with torch.no_grad():
        out = net(x, t, y)
    assert out.shape == (2, channels * (2 if learn_sigma else 1), size, size)
    assert torch.isfinite(out).all()


def make(family, size=16, **kw):
    cls, tiny, per_size = FAMILIES[family]
    torch.manual_seed(0)
    return cls(image_size=size, **tiny, **(per_size(size) if per_size else {}), **kw)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_untrained_net_predicts_zero_and_none_is_null_class(family):
    net = make(family, num_classes=3)
    x, t, _ = inputs(net)
    assert net(x, t).abs().max() == 0
    net = perturb(net)
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t, torch.tensor([3, 3])))
        assert (net(x, t, torch.tensor([0, 0])) - net(x, t, torch.tensor([1, 1]))).abs().max() > 1e-3


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fractional_timesteps(family):
    """Timesteps are continuous: t = 10.5 is its own input, and lies between its neighbours."""
    net = perturb(make(family))
    x, _, _ = inputs(net, batch=1)
    with torch.no_grad():
        out = {t: net(x, torch.tensor([t])) for t in (10.0, 10.5, 11.0)}
        assert torch.equal(net(x, torch.tensor([10])), out[10.0])
    assert not torch.allclose(out[10.5], out[10.0]) and not torch.allclose(out[10.5], out[11.0])
    mid = (out[10.0] + out[11.0]) / 2
    assert (out[10.5] - mid).abs().max() < (out[11.0] - out[10.0]).abs().max()


# family -> (optimizer steps, lr, how many final losses are averaged)
TRAINING = {"unet": (20, 2e-3, 5), "adm": (15, 2e-3, 4), "cspdarkunet": (15, 2e-3, 4),
            "dit": (15, 5e-3, 4)}  # adaLN-Zero starts every DiT block at the identity: a larger lr


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_training_reduces_loss(family):
    steps, lr, last = TRAINING[family]
    net = make(family)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    x0 = torch.stack([torch.sin(3 * xx + k) * torch.cos(2 * yy - k) for k in range(8)])[:, None].expand(8, 3, 16, 16)
    losses = []
    for _ in range(steps):
        t = torch.randint(0, 1000, (8,), generator=g)
        ab = torch.cos((t.float() / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
        noise = torch.randn(x0.shape, generator=g)
        xt = ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * noise
        loss = F.mse_loss(net(xt, t), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-last:]) / last < 0.7 * sum(losses[:3]) / 3


# family -> (registry name, extra options, tensors the file must hold besides parameters)
ROUND_TRIP = {"unet": ("unet", {}, ()), "adm": ("adm", {"resblock_updown": True}, ()),
              "cspdarkunet": ("cspdarkunet", {}, ()), "dit": ("dit-s/4", {"in_channels": 4}, ("pos_embed",))}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_model_file_round_trip(family, tmp_path):
    name, extra, buffers = ROUND_TRIP[family]
    net = perturb(make(family, num_classes=3, learn_sigma=True, **extra))
    meta = {"network": {"name": name, "config": net.config}, "diffusion": {}, "data": {}}
    save_model_file(tmp_path / "m.safetensors", net.state_dict(), meta)
    tensors, meta2 = load_model_file(tmp_path / "m.safetensors")
    assert all(b in tensors for b in buffers)
    again = registry.build(meta2["network"]["name"], **meta2["network"]["config"])
    load_weights_into(again, tensors, "m.safetensors")
    x, t, y = inputs(net)
    with torch.no_grad():
        assert torch.equal(again(x, t, y), net(x, t, y))
