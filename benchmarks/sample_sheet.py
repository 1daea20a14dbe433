"""Real images next to each model's samples, class by class: the picture a person checks before a table.

    python benchmarks/sample_sheet.py MODEL [MODEL ...] --dataset defects --out sheet.png

Columns: held-out real images of the built-in set (defects or glyphs, at the first model's size, seed 5,
which no benchmark trains on), then each model's samples (sampling defaults, seed 0); rows: classes,
``--per-class`` images each. A judge's distance can miss what the eye sees at once (a long thin scratch
drawn as a few specks), so the benchmark notes show this sheet beside the numbers.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from difforge.data.io import make_grid


def real_block(dataset: str, size: int, per_class: int, channels: int) -> np.ndarray:
    from quality_budget import as_channels, real_images

    x, y, _ = real_images(dataset, size, per_class, seed=5)
    order = np.concatenate([np.where(y == c)[0][:per_class] for c in range(int(y.max()) + 1)])
    return make_grid(as_channels(x[order], channels), nrow=per_class)


def model_block(path: str, per_class: int, channels: int) -> np.ndarray:
    from difforge.pipeline import Pipeline
    from quality_budget import as_channels

    out = Pipeline.from_checkpoint(path).generate(num=per_class, class_label="all", seed=0)
    order = np.argsort(out.labels.numpy(), kind="stable")
    return make_grid(as_channels(out.images.numpy()[order], channels), nrow=per_class)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", metavar="MODEL")
    ap.add_argument("--dataset", choices=["defects", "glyphs"], default="defects")
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--out", default="sample_sheet.png")
    args = ap.parse_args()
    from difforge.modelfile import read_metadata

    size = int(read_metadata(args.models[0])["data"]["image_size"])
    channels = 3 if args.dataset == "defects" else 1
    blocks = [real_block(args.dataset, size, args.per_class, channels)]
    blocks += [model_block(m, args.per_class, channels) for m in args.models]
    height = max(b.shape[0] for b in blocks)
    gap = np.full((height, 8, blocks[0].shape[2]), 255, np.uint8)
    sheet = np.concatenate([x for b in blocks for x in (b, gap)][:-1], axis=1)
    Image.fromarray(sheet.squeeze(-1) if sheet.shape[-1] == 1 else sheet).save(args.out)
    print(f"sheet: {args.out} (columns: real, {', '.join(args.models)})")


if __name__ == "__main__":
    main()
