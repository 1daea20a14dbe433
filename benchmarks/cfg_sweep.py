"""Which classifier-free guidance scale should ``difforge sample`` use by default? A measured sweep (issue 16).

For trained class-conditional model files (e.g. the 12-minute runs of benchmarks/quality_budget.py,
whose datasets the file's run name names), this samples 100 images per scale with the sampling
defaults otherwise (UniPC, 20 steps) and scores them with the judge of quality_budget.py (a CNN
trained only on real held-out images): class accuracy, Frechet distance and KID in the judge's
features, precision / recall, next to the real-vs-real floor, and seconds per 100 images. Guidance
trades variety (recall, distance) for class fidelity (accuracy); the default is the scale with the
best distance among those within 0.02 of the best accuracy, printed at the end.

``--intervals`` adds the guidance interval (issue 23; Kynkaenniemi et al. 2024): each scale is also
sampled with guidance only where sigma is in (LO, HI], the unconditional half skipped elsewhere. The
cost column ``rows`` counts images through the network per sample (2 per guided step, 1 per
unguided one), which does not depend on the machine's load as seconds do. ``--samplers ddim:50
unipc:20`` compares samplers (e.g. the default against diffusers' usual DDIM-50) with everything else equal.

    python benchmarks/cfg_sweep.py --model defects=runs/quality_budget/defects-fast-32px-12min/checkpoints/ema.safetensors \\
        --model glyphs=runs/quality_budget/glyphs-fast-32px-12min/checkpoints/ema.safetensors --scales 1 1.5 2 3 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from quality_budget import Judge, loadavg, machine  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="DATASET=FILE", help="defects=FILE or glyphs=FILE (repeatable)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0])
    ap.add_argument("--intervals", nargs="+", default=["all"], metavar="LO,HI",
                    help="guidance intervals in sigma (LO,HI) to sample each scale with; 'all' = every step (default)")
    ap.add_argument("--samplers", nargs="+", default=["default"], metavar="NAME:STEPS",
                    help="samplers to compare, e.g. ddim:50 unipc:20 unipc:20:uniform (NAME:STEPS[:SPACING]; 'default' = SampleConfig's)")
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    from difforge.pipeline import Pipeline

    print(f"# {machine()}; loadavg before {loadavg()}", flush=True)
    rows, best = [], {}
    for spec in args.model:
        dataset, _, path = spec.partition("=")
        pipe = Pipeline.from_checkpoint(path)
        size = pipe.image_size
        jd = Judge(dataset, size)
        floor, names = jd.floor, jd.names
        rows.append(dict(dataset=dataset, size=size, sampler="-", cfg="real held-out", interval="-", rows="-", sample_s="-", **floor))
        per = []
        count = [0]
        pipe.net.register_forward_pre_hook(lambda _m, a: count.__setitem__(0, count[0] + a[0].shape[0]))
        for sm, s, iv in [(sm, s, iv) for sm in args.samplers for s in args.scales for iv in args.intervals]:
            interval = None if iv == "all" else tuple(float(v) for v in iv.split(","))
            name, steps, spacing = (sm.split(":") + [None, None])[:3]
            how = {} if sm == "default" else dict(sampler=name, steps=int(steps), **({"spacing": spacing} if spacing else {}))
            t0, count[0] = time.perf_counter(), 0
            out = pipe.generate(num=args.num // len(names) + 1, class_label="all", seed=1000, cfg=s, cfg_interval=interval, **how)
            dt = (time.perf_counter() - t0) * 100 / len(out.images)
            r = dict(dataset=dataset, size=size, sampler=sm, cfg=s, interval=iv, rows=round(count[0] / len(out.images), 1),
                     sample_s=round(dt, 1), **jd.score(out.images.numpy(), out.labels.numpy()))
            rows.append(r)
            per.append(r)
            print(f"row: {r}", flush=True)
        top = max(r["acc"] for r in per)
        pick = min((r for r in per if r["acc"] >= top - 0.02), key=lambda r: r["fd"])
        best[dataset] = f"{pick['sampler']} {pick['cfg']:g}" + ("" if pick["interval"] == "all" else f" in ({pick['interval']}]")
    print(f"# loadavg after {loadavg()}; sample_s = seconds per 100 images, {args.threads} torch thread(s)")
    head = ["dataset", "size", "sampler", "cfg", "interval", "rows", "sample_s", "acc", "fd", "kid", "precision", "recall", "mem_px", "mem_feat"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in head) + " |")
    print("best scale (best distance within 0.02 of the best accuracy): " + ", ".join(f"{d} {s}" for d, s in best.items()))


if __name__ == "__main__":
    main()
