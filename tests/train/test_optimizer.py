"""The optimizers: Adam/AdamW run PyTorch's fused kernel on a CPU too, with the plain kernel's numbers."""

import pytest
import torch

from difforge.errors import ConfigError
from difforge.train.optim import build_optimizer


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 3, 3, padding=1))


def _train(opt_factory, steps=5):
    net = _net()
    opt = opt_factory(net.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        net(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_cpu_adam_is_fused_and_matches_the_single_tensor_kernel(name):
    opt = build_optimizer(_net().parameters(), name, 1e-2, 0.01, torch.device("cpu"))
    assert opt.defaults["fused"] is True
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    ours = _train(lambda p: build_optimizer(p, name, 1e-2, 0.01, torch.device("cpu")))
    plain = _train(lambda p: cls(p, lr=1e-2, weight_decay=0.01, foreach=False))
    assert torch.allclose(ours, plain, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours, _train(lambda p: cls(p, lr=1e-2, weight_decay=0.0, foreach=False)))  # the decay is applied


def test_sgd_and_unknown_names():
    opt = build_optimizer(_net().parameters(), "sgd", 1e-2, 0.0, torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    with pytest.raises(ConfigError, match="optimizer"):
        build_optimizer(_net().parameters(), "lion", 1e-2, 0.0, torch.device("cpu"))
