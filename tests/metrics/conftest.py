import numpy as np
import pytest
import torch
from PIL import Image


class TinyFeatures(torch.nn.Module):
    """A small fixed feature extractor: [0, 1] images -> 8 pooled conv features + 3 colour means."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x * 2 - 1)).mean(dim=(2, 3))
        return torch.cat([h, x.mean(dim=(2, 3))], dim=1)


@pytest.fixture(scope="session")
def script_extractor(tmp_path_factory):
    path = tmp_path_factory.mktemp("extractor") / "tiny.pt"
    torch.jit.save(torch.jit.script(TinyFeatures().eval()), str(path))
    return path


def make_folder(root, classes, n, size=20, shift=0, seed=0):
    """Random images; ``shift`` brightens them so two folders can differ measurably."""
    rng = np.random.default_rng(seed)
    for c in classes:
        d = root / c if c else root
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.clip(rng.integers(0, 200, (size, size + 6, 3)) + shift, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.png")
    return root
