"""The downstream judges of benchmarks/downstream.py: a small segmenter and a classifier, their
training at a fixed number of steps (the same for every training set, so compute is equal), and
the metrics (pixel AP, IoU, F1, image accuracy) computed here in torch from their definitions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TinySegmenter(nn.Module):
    """A two-level fully convolutional net (about 30k parameters): per-pixel defect logits."""

    def __init__(self, channels: int = 3, width: int = 16):
        super().__init__()
        w = width
        self.enc = nn.Sequential(nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU())
        self.dec = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 1, 1))

    def forward(self, x):
        a = self.enc(x)
        b = F.interpolate(self.mid(F.max_pool2d(a, 2)), scale_factor=2.0, mode="nearest")
        return self.dec(torch.cat([a, b], dim=1))


def _geometric(x: torch.Tensor, m: torch.Tensor, g: torch.Generator):
    """The same random flips and 90-degree turn for images and masks (defects have no orientation)."""
    if torch.rand((), generator=g) < 0.5:
        x, m = x.flip(-1), m.flip(-1)
    if torch.rand((), generator=g) < 0.5:
        x, m = x.flip(-2), m.flip(-2)
    k = int(torch.randint(0, 4, (), generator=g))
    return torch.rot90(x, k, (-2, -1)), torch.rot90(m, k, (-2, -1))


def train_segmenter(x: torch.Tensor, m: torch.Tensor, steps: int, seed: int, batch: int = 16) -> nn.Module:
    """``x`` float (N, C, H, W) in [-1, 1], ``m`` float (N, 1, H, W) 0/1; BCE, AdamW, cosine LR."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = TinySegmenter(x.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb, mb = _geometric(x[idx], m[idx], g)
        loss = F.binary_cross_entropy_with_logits(net(xb), mb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def train_image_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int, seed: int, batch: int = 16) -> nn.Module:
    """demo_quality's SmallCNN and colour/flip augmentation, a fixed number of steps."""
    from demo_quality import SmallCNN, augment

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = SmallCNN(x.shape[1], num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb = torch.rot90(x[idx], int(torch.randint(0, 4, (), generator=g)), (-2, -1))
        loss = F.cross_entropy(net(augment(xb.clone(), g)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def average_precision(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """AP = mean over positives of the precision at their rank (scores sorted high to low)."""
    s, t = scores.flatten().double(), truth.flatten().bool()
    if not t.any():
        return float("nan")
    order = torch.argsort(s, descending=True)
    hits = t[order].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.double)
    return float((precision * hits).sum() / hits.sum())


@torch.no_grad()
def segmentation_scores(net: nn.Module, x: torch.Tensor, m: torch.Tensor) -> dict:
    """Pixel AP, and IoU / F1 of the defect pixels at probability 0.5, pooled over the test set."""
    p = torch.cat([torch.sigmoid(net(x[i : i + 64])) for i in range(0, len(x), 64)])
    t = m.bool()
    pred = p > 0.5
    tp, fp, fn = (pred & t).sum().item(), (pred & ~t).sum().item(), (~pred & t).sum().item()
    return {"pixel_ap": average_precision(p, t), "iou": tp / max(1, tp + fp + fn), "f1": 2 * tp / max(1, 2 * tp + fp + fn)}


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    pred = torch.cat([net(x[i : i + 64]).argmax(1) for i in range(0, len(x), 64)])
    return float((pred == y).float().mean())
