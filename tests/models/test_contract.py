"""The denoising-network contract, checked for every network family the same way.

``net(x, t, y) -> out``: x (B, C, H, W), fractional t, y class indices or None; out has C
channels, or 2C when the network also predicts the variance (learn_sigma), at x's size.
"""

import pytest
import torch

from difforge.models.adm import ADM
from difforge.models.cspdarkunet import CSPDarkUNet
from difforge.models.dit import DiT
from difforge.models.unet import UNet
from tests.models.netkit import inputs, perturb

# (class, tiny options, options that depend on the image size)
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
