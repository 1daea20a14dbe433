"""Networks, built by name through one registry.

    >>> from difforge import models
    >>> net = models.build("unet-tiny", image_size=32, num_classes=4)
    >>> out = net(x, t, y)                      # (B, C, H, W), or 2C with learn_sigma
    >>> same = models.build(net.arch, **net.config)

Every network follows the contract ``net(x, t, y=None) -> Tensor`` and exposes ``arch``,
``config``, ``in_channels``, ``out_channels``, ``num_classes``, ``learn_sigma`` and ``image_size``.
"""

from . import unet  # noqa: F401  (registers the default network and its presets)
from .info import count_parameters, describe, forward_gflops
from .registry import available, build, check_image_size, options, register
from .unet import PRESETS, UNet

__all__ = [
    "PRESETS",
    "UNet",
    "available",
    "build",
    "check_image_size",
    "count_parameters",
    "describe",
    "forward_gflops",
    "options",
    "register",
]
