"""Quality per CPU-minute (issue 16): which recipe gives the best samples in M minutes of training?

For every recipe (``--preset`` iddm, classic = the old defaults, fast = the new defaults), every
budget M (``--minutes``) and image size (``--sizes``) this trains on the built-in defect set with
``--max-minutes M``, samples 100 class-conditional images with the sampling defaults (timed) and
scores them with a judge classifier trained only on real images the models never saw
(benchmarks/demo_quality.py's CNN): class accuracy of the samples, Frechet distance and KID in the
judge's features (penultimate layer), precision / recall, and the memorisation fraction (samples
whose nearest training image, in pixels, is closer than 95% of the training images are to their
own nearest neighbour), next to the real-vs-real floor (held-out real images scored the same way).

    python benchmarks/quality_budget.py --minutes 3 12 --sizes 32 64      # the issue's table (hours)
    python benchmarks/quality_budget.py --smoke                           # a minute: does it run?

Not done here yet: the second dataset (glyphs / shapes unlike the built-in set).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from demo_quality import to_float, train_classifier  # noqa: E402

from difforge.data.builtin import generate_arrays  # noqa: E402
from difforge.metrics.fid import fid_from_features  # noqa: E402
from difforge.metrics.kid import kernel_inception_distance  # noqa: E402
from difforge.metrics.precision_recall import precision_recall  # noqa: E402


@torch.no_grad()
def judge(clf, images_nhwc):
    """(predicted classes, penultimate features) of uint8 images."""
    x = to_float(images_nhwc)
    feats = torch.cat([clf.features(x[i : i + 256]).mean(dim=(2, 3)) for i in range(0, len(x), 256)])
    return clf.head(feats).argmax(1), feats.numpy().astype(np.float64)


def memorised_fraction(samples, train) -> float:
    """Share of samples closer (L2, pixels) to a training image than 95% of training images are to
    their nearest other training image."""
    s = torch.as_tensor(samples).flatten(1).float()
    t = torch.as_tensor(train).flatten(1).float()
    tt = torch.cdist(t, t)
    tt.fill_diagonal_(float("inf"))
    threshold = torch.quantile(tt.min(1).values, 0.05)
    return float((torch.cdist(s, t).min(1).values < threshold).float().mean())


def scores(clf, images, labels, real_feats, train_images):
    pred, feats = judge(clf, images)
    kid, _ = kernel_inception_distance(real_feats, feats, subsets=20, subset_size=min(100, len(feats)))
    p, r = precision_recall(real_feats, feats)
    return dict(acc=float((pred == torch.as_tensor(labels)).float().mean()), fd=fid_from_features(real_feats, feats),
                kid=kid, precision=p, recall=r, memorised=memorised_fraction(images, train_images))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[3.0, 12.0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--recipes", nargs="+", default=["iddm", "classic", "fast"])
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--runs-dir", default="runs/quality_budget")
    ap.add_argument("--smoke", action="store_true", help="16 px, 0.1 min, fast only: checks that it runs")
    args = ap.parse_args()
    if args.smoke:
        args.minutes, args.sizes, args.recipes, args.per_class = [0.1], [16], ["fast"], 20

    from difforge.pipeline import Pipeline
    from difforge.train.presets import preset_values
    from difforge.train.trainer import Trainer

    rows = []
    for size in args.sizes:
        clf, names = train_classifier(size, 3, per_class=100 if args.smoke else 400, epochs=2 if args.smoke else 8)
        real, real_labels, _ = generate_arrays(size=size, per_class=25, seed=2, channels=3)
        _, real_feats = judge(clf, real)
        floor_half = len(real) // 2
        floor = scores(clf, real[:floor_half], real_labels[:floor_half], real_feats[floor_half:], real[floor_half:])
        rows.append(dict(recipe="real held-out", minutes="-", size=size, steps="-", seen="-", sample_s="-", **floor))
        for minutes in args.minutes:
            for recipe in args.recipes:
                run = f"{recipe}-{size}px-{minutes:g}min"
                cfg = dict(preset_values(recipe), run=run, runs_dir=args.runs_dir, image_size=size,
                           builtin_per_class=args.per_class, max_minutes=minutes, batch_size=16)
                if size < 32 and cfg.get("network") == "unet":
                    cfg["network"] = "unet-small"  # the 4-level unet needs 32 px or more at the smoke size
                result = Trainer(progress=False, **cfg).fit()
                pipe = Pipeline.from_checkpoint(result.model_file)
                t0 = time.perf_counter()
                out = pipe.generate(num=25, class_label="all", seed=1000)
                dt = time.perf_counter() - t0
                train, _, _ = generate_arrays(size=size, per_class=args.per_class, seed=0, channels=pipe.channels)
                imgs = out.images.numpy()
                if imgs.shape[-1] == 1:
                    imgs = np.repeat(imgs, 3, -1)
                    train = np.repeat(train, 3, -1)
                s = scores(clf, imgs, out.labels.numpy(), real_feats, train)
                rows.append(dict(recipe=recipe, minutes=minutes, size=size, steps=result.steps,
                                 seen=result.steps * 16, sample_s=round(dt, 1), **s))
    head = ["recipe", "minutes", "size", "steps", "seen", "sample_s", "acc", "fd", "kid", "precision", "recall", "memorised"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in head) + " |")


if __name__ == "__main__":
    main()
