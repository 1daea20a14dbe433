"""What the network tests share: weights moved off their initial values, and seeded inputs.

Every denoising network honours one contract, ``net(x, t, y) -> out`` (see
``test_contract.py``); these helpers let each network's own tests probe it the same way.
"""

import torch


def perturb(net, scale=0.05, seed=0):
    """Move every weight off its initial value, so zero-initialised layers do something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


def inputs(net, batch=2, size=None, seed=1):
    """Seeded (x, t, y) for ``net``: fractional timesteps, labels only for a conditional net."""
    g = torch.Generator().manual_seed(seed)
    size = size or net.image_size
    x = torch.randn(batch, net.in_channels, size, size, generator=g)
    t = torch.rand(batch, generator=g) * 999
    y = torch.randint(0, net.num_classes, (batch,), generator=g) if net.num_classes else None
    return x, t, y
