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


@pytest.mark.parametrize("over, pretrain, want", [
    (dict(), None, 2e-3),  # a new class-conditional pixel diffusion run: the measured peak
    (dict(conditional=False), None, 2e-3),  # unconditional too
    (dict(), "model.safetensors", 1e-3),  # a fine-tune keeps the smaller step
    (dict(network="unet"), None, 1e-3),  # only unet-tiny was measured at the larger step
    (dict(network="dit-s/2"), None, 1e-3),
    (dict(text_encoder="builtin"), None, 1e-3),  # text runs were measured at 1e-3
    (dict(latent=True, vae="vae.safetensors"), None, 1e-3),
    (dict(task="vae"), None, 1e-3),
    (dict(task="classifier"), None, 1e-3),
    (dict(lr=5e-4), None, 5e-4),  # what the user says is kept
    (dict(lr=5e-4, task="vae"), None, 5e-4),
])
def test_lr_auto_settles_by_kind_of_run(over, pretrain, want):
    from difforge.config import Config
    from difforge.train.optim import choose_lr

    config = Config().override(**over)
    assert config.train.lr == over.get("lr", "auto")
    config.validate()  # "auto" is a valid value until the run settles it
    assert choose_lr(config, pretrain).train.lr == want


def test_lr_auto_is_recorded_in_config_yaml(tmp_path):
    """The settled number goes into config.yaml and the optimizer, so a resumed run keeps it whatever
    the default becomes later."""
    import yaml

    from difforge.train.trainer import Trainer
    from tests.conftest import tiny_overrides

    over = tiny_overrides(tmp_path, max_steps=2, lr_schedule="constant")
    over.pop("lr")
    trainer = Trainer(progress=False, **over)
    trainer.fit()
    saved = yaml.safe_load((tmp_path / "runs" / "t" / "config.yaml").read_text())
    assert saved["train"]["lr"] == pytest.approx(2e-3)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)


def test_lr_flag_takes_auto_or_a_number():
    from difforge.cli.main import build_parser

    p = build_parser()
    assert p.parse_args(["train", "--lr", "auto"]).lr == "auto"
    assert p.parse_args(["train", "--lr", "3e-4"]).lr == pytest.approx(3e-4)
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--lr", "fast"])
