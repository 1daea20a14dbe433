"""What the export, report, runs and TensorBoard tests share: a real tiny run, tiny model files."""

import torch

from difforge.modelfile import save_model_file
from difforge.models import registry
from tests.conftest import tiny_overrides
from tests.models.netkit import perturb

# tiny options per network family (as tests/models/test_contract.py), at 16 px
FAMILIES = {
    "unet": dict(base_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], head_channels=8),
    "adm": dict(num_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], num_head_channels=8),
    "cspdarkunet": dict(base_channels=16, channel_mult=[1, 2, 2], csp_depth=[1, 1], attention_resolutions=[8], head_channels=8),
    "dit": dict(hidden_size=32, depth=2, num_heads=2, patch_size=2),
}
CLASSES = ["scratch", "crack", "patch"]


def train_tiny_run(tmp_path, run="t", **kw):
    """Train a real 12-step run with previews at steps 4, 8 and 12; return its folder."""
    from difforge.train.trainer import Trainer

    opts = dict(max_steps=12, preview_every=4)
    opts.update(kw)
    return Trainer(progress=False, **tiny_overrides(tmp_path, run=run, **opts)).fit().run_dir


def tiny_model_file(path, family="unet", num_classes=3, learn_sigma=False, channels=3, size=16):
    """A model file of a tiny ``family`` network with weights moved off their (zero) init."""
    torch.manual_seed(0)
    net = perturb(registry.build(family, image_size=size, in_channels=channels, num_classes=num_classes,
                                 learn_sigma=learn_sigma, **FAMILIES[family]))
    meta = {
        "kind": "diffusion",
        "network": {"name": family, "config": net.config},
        "diffusion": {"diffusion_steps": 1000, "noise_schedule": "linear", "target": "eps", "loss": "mse", "learn_sigma": learn_sigma},
        "data": {"image_size": size, "channels": channels, "class_names": CLASSES[:num_classes]},
        "train": {"step": 1, "epoch": 0.1, "run": "tiny"},
        "weights": "ema",
    }
    save_model_file(path, net.state_dict(), meta)
    return path, net.eval()
