"""A picture of what a built-in text model does with *where*: one row per prompt, one column per position.

Rows are (defect, surface) prompts in the built-in captions' words, the last two the combinations that
benchmarks/text_conditioning.py holds out of training (marked "never trained"); columns are the 3 x 3
positions. One sample per cell (the model's default sampler, guidance, place contrast and analogy), enlarged 3x.
``--analogy-off-rows`` adds the never-trained rows once more as the model draws them without the analogy
(difforge/pipeline/analogy.py), same seeds. The README's text section shows one (benchmarks/results/text_positions_grid.jpg).

    python benchmarks/prompt_grid.py runs/text-12min/checkpoints/ema.safetensors --out grid.jpg [--analogy-off-rows]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw

from difforge.data.builtin_captions import POSITIONS, place_phrase
from difforge.data.io import make_grid
from difforge.pipeline import Pipeline

ROWS = (("a large horizontal scratch", "brushed steel"), ("a medium inclusion", "wood"), ("a medium diagonal crack", "brushed steel"),
        ("a medium patch", "wood"), ("a medium diagonal crack", "wood"), ("a medium inclusion", "brushed steel"))
HELD_OUT = {("crack", "wood"), ("inclusion", "brushed steel")}
ZOOM, PAD, LABEL_W = 3, 4, 210


def prompt(what: str, position: str, surface: str) -> str:
    return f"{what} {place_phrase(position)} on {surface}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", required=True, help="the picture (.png or .jpg)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--analogy-off-rows", action="store_true", help="the never-trained rows again, without the analogy")
    args = ap.parse_args(argv)
    pipe = Pipeline.from_checkpoint(args.model, device="cpu", precision="fp32")
    prompts = [prompt(what, p, surface) for what, surface in ROWS for p in POSITIONS]
    images = pipe.generate(num=1, prompt=prompts, seed=args.seed, steps=args.steps).images.numpy()
    labels = [f"{what}\non {surface}" + ("  (never trained)" if (what.split()[-1], surface) in HELD_OUT else "") for what, surface in ROWS]
    if args.analogy_off_rows:
        held = [(i, row) for i, row in enumerate(ROWS) if (row[0].split()[-1], row[1]) in HELD_OUT]
        off = pipe.generate(num=1, prompt=[prompt(what, p, surface) for _, (what, surface) in held for p in POSITIONS],
                            seed=args.seed + len(POSITIONS) * held[0][0], steps=args.steps, analogy=0).images.numpy()
        images = np.concatenate([images, off])
        labels += [f"{what}\non {surface}\n(never trained, analogy off)" for _, (what, surface) in held]
    grid = make_grid(np.repeat(np.repeat(images, ZOOM, 1), ZOOM, 2), nrow=len(POSITIONS), padding=PAD)
    canvas = Image.new("RGB", (grid.shape[1] + LABEL_W, grid.shape[0] + 22), "white")
    canvas.paste(Image.fromarray(grid).convert("RGB"), (LABEL_W, 22))
    draw, cell = ImageDraw.Draw(canvas), images.shape[1] * ZOOM + PAD
    for j, p in enumerate(POSITIONS):
        draw.text((LABEL_W + PAD + j * cell, 5), p, fill="black")
    for i, label in enumerate(labels):
        draw.text((4, 22 + PAD + i * cell + cell // 2 - 8), label, fill="black")
    canvas.save(args.out, **({"quality": 88} if args.out.lower().endswith((".jpg", ".jpeg")) else {}))
    print(f"{args.out}: {len(labels)} prompts x {len(POSITIONS)} positions, guidance {pipe.default_cfg:g}")


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    main()
