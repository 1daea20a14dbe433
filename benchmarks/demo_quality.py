"""Are the demo's samples recognisably of their class?

Trains a small CNN classifier on *real* built-in images (a seed the demo never saw), checks it
on held-out real images, then reports the share of a model's conditional samples that it
assigns to the class they were asked for (target: >= 80%).

    python benchmarks/demo_quality.py                                  # the demo's model file
    python benchmarks/demo_quality.py --model runs/x/checkpoints/ema.safetensors --cfg 3 --steps 25
    python benchmarks/demo_quality.py --train-demo                     # run `difforge demo` first
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from difforge.data.builtin import generate_arrays


def to_float(images_nhwc_uint8) -> torch.Tensor:
    x = torch.as_tensor(images_nhwc_uint8).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x


class SmallCNN(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        layers, c = [], channels
        for w in (32, 64, 128):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def augment(xb: torch.Tensor, g: torch.Generator, flips: bool = True) -> torch.Tensor:
    """Flips and colour jitter (channel shuffles, gains, offsets, grey mixes).

    The judge must recognise a defect by its shape, not by the background colour of the images it
    was trained on: samples of a young model often have off colours, and a colour-bound judge
    would then report noise instead of class fidelity.
    """
    n, c = xb.shape[:2]
    flip = torch.rand(n, generator=g) < 0.5
    vflip = torch.rand(n, generator=g) < 0.5
    if flips:  # off for data whose class a mirror changes (glyphs)
        xb[flip] = xb[flip].flip(-1)
        xb[vflip] = xb[vflip].flip(-2)
    if c == 3:
        perm = torch.stack([torch.randperm(3, generator=g) for _ in range(n)])
        xb = torch.gather(xb, 1, perm[:, :, None, None].expand_as(xb))
        grey = xb.mean(1, keepdim=True)
        mix = torch.rand(n, 1, 1, 1, generator=g)
        xb = mix * grey + (1 - mix) * xb
    gain = 0.5 + torch.rand(n, c, 1, 1, generator=g)
    offset = 0.6 * (torch.rand(n, c, 1, 1, generator=g) - 0.5)
    return (xb * gain + offset).clamp(-1, 1)


def train_classifier(size: int, channels: int, per_class: int = 400, epochs: int = 8, seed: int = 1, data=None, flips: bool = True):
    """A judge CNN trained on real images: the built-in defect set (seed ``seed``), or ``data`` =
    (uint8 NHWC images, labels, class names) of another dataset."""
    imgs, labels, names = data if data is not None else generate_arrays(size=size, per_class=per_class, seed=seed, channels=channels)
    net = fit_judge(lambda: SmallCNN(channels, len(names)), to_float(imgs), torch.as_tensor(labels).long(), F.cross_entropy, epochs, flips=flips)
    return net, names


def fit_judge(make_net, x, y, loss_fn, epochs: int, seed: int = 0, flips: bool = True):
    """A judge network (built by ``make_net`` after seeding, so its initial weights are reproducible)
    trained on real images ``x`` (float NCHW) against ``y`` with :func:`augment`: AdamW, one-cycle LR,
    batches of 64; in eval mode."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = loss_fn(net(augment(x[idx].clone(), g, flips)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def accuracy_by_class(net, x, y, num_classes):
    pred = torch.cat([net(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return [(pred[y == k] == k).float().mean().item() for k in range(num_classes)], (pred == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/demo/checkpoints/ema.safetensors")
    ap.add_argument("--train-demo", action="store_true", help="run `difforge demo` first")
    ap.add_argument("--num", type=int, default=50, help="samples per class")
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=3.0)
    args = ap.parse_args()

    if args.train_demo:
        from difforge.cli.main import main as cli

        cli(["demo", "--quiet"])
    from difforge.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(args.model)
    t0 = time.perf_counter()
    clf, names = train_classifier(pipe.image_size, pipe.channels)
    t_clf = time.perf_counter() - t0
    real, real_labels, _ = generate_arrays(size=pipe.image_size, per_class=100, seed=2, channels=pipe.channels)
    real_acc, real_all = accuracy_by_class(clf, to_float(real), torch.as_tensor(real_labels).long(), len(names))

    rows = []
    for cfg in sorted({1.0, args.cfg}):
        t0 = time.perf_counter()
        out = pipe.generate(num=args.num, class_label="all", sampler=args.sampler, steps=args.steps, cfg=cfg, seed=1000, batch_size=100)
        dt = (time.perf_counter() - t0) / len(out.images)
        acc, overall = accuracy_by_class(clf, to_float(out.images), out.labels, len(names))
        rows.append((cfg, acc, overall, dt))

    print(f"# classifier trained in {t_clf:.0f} s on real built-in images (seed 1); model: {args.model}")
    head = "| | " + " | ".join(names) + " | all | s/image |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    print("| real held-out images | " + " | ".join(f"{a:.0%}" for a in real_acc) + f" | {real_all:.0%} | - |")
    for cfg, acc, overall, dt in rows:
        print(f"| samples, {args.sampler} {args.steps} steps, cfg {cfg:g} | " + " | ".join(f"{a:.0%}" for a in acc) + f" | {overall:.0%} | {dt:.3f} |")


if __name__ == "__main__":
    main()
