"""UNet ``input_coords``: each pixel's x and y join the first conv's input (CoordConv)."""

import torch

from difforge.models import registry
from difforge.models.layers import coordinate_planes


def test_coordinate_planes_are_the_pixel_centres():
    x = torch.zeros(3, 5, 4, 2)
    planes = coordinate_planes(x)
    assert planes.shape == (3, 2, 4, 2)
    assert torch.equal(planes[1, 0], torch.tensor([[-0.5, 0.5]] * 4))  # x: centres of 2 columns in (-1, 1)
    assert torch.equal(planes[2, 1, :, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # y: centres of 4 rows
    cl = coordinate_planes(torch.zeros(1, 4, 6, 6).contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last)


def test_first_conv_sees_the_image_and_the_planes_also_when_folded():
    for size, patch in ((16, 1), (32, 2)):
        net = registry.build("unet-tiny", image_size=size, in_channels=3, patch_size=patch, input_coords=True)
        seen = []
        net.input_conv.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
        x = torch.randn(2, 3, size, size)
        net(x, torch.tensor([10, 500]))
        (inp,) = seen
        folded = torch.nn.functional.pixel_unshuffle(x, patch) if patch > 1 else x
        assert inp.shape == (2, 3 * patch * patch + 2, size // patch, size // patch)
        assert torch.equal(inp[:, :-2], folded) and torch.equal(inp[:, -2:], coordinate_planes(folded))
        again = registry.build("unet-tiny", **net.config)  # the option is in the config a model file stores
        again.load_state_dict(net.state_dict())
        assert again.input_conv.in_channels == net.input_conv.in_channels
    plain = registry.build("unet-tiny", image_size=16, in_channels=3)
    assert plain.input_conv.in_channels == 3 and plain.config["input_coords"] is False
