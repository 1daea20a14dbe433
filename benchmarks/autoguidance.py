"""Autoguidance against classifier-free guidance (issue 16, 64 px): does guiding the 12-minute
model by a weaker model of the same data (Karras et al. 2024) give samples closer to real ones?

For every dataset this trains (or with ``--reuse`` loads from ``--runs-dir``) the default model
with a CPU budget of ``--minutes`` and a weak one with ``--weak-minutes`` (same recipe, same data:
a shorter run is the paper's "trained less" degradation), then samples 100 class-conditional
images per setting with the sampling defaults and scores them with quality_budget.py's judge (a
classifier trained only on real held-out images): built-in CFG at its default and at ``--cfg``
scales, and autoguidance at weights ``--w`` (eps = (1 + w) eps - w eps_weak), guided at every
step or only inside the default guidance interval. The real-vs-real floor is printed beside.

    python benchmarks/autoguidance.py --datasets defects glyphs            # ~1 h on 2 cores
    python benchmarks/autoguidance.py --reuse --w 0.5 1 2                   # rescore trained models
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from quality_budget import Judge, cpu_clock, data_source, loadavg, machine, print_table  # noqa: E402

SNAPSHOT_EVERY = 250


def snapshots(model: Path):
    """{fraction of the run: file} of the EMA snapshots beside ``model``."""
    files = sorted(model.parent.glob("step_*.safetensors"))
    last = max(int(f.stem[5:]) for f in files) if files else 1
    from difforge.modelfile import read_metadata

    total = int(read_metadata(model)["train"]["step"])
    return {int(f.stem[5:]) / max(total, last): f for f in files}


def train(dataset: str, size: int, minutes: float, runs_dir: str, per_class: int, reuse: bool, source: dict, conditional: bool = True):
    """The model file of the default recipe trained for ``minutes`` of one core's CPU time (with EMA
    snapshots every SNAPSHOT_EVERY steps, the weak models of ``--weak snapshot``)."""
    from difforge.train.presets import preset_values
    from difforge.train.trainer import Trainer

    run = f"{dataset}-fast-{size}px-{minutes:g}min" + ("" if conditional else "-uncond")
    model = Path(runs_dir) / run / "checkpoints" / "ema.safetensors"
    if reuse and model.exists():
        return model
    cfg = dict(preset_values("fast"), run=run, runs_dir=runs_dir, image_size=size, max_minutes=minutes, batch_size=16,
               conditional=conditional, save_every=SNAPSHOT_EVERY)
    cfg.update(source)
    result = Trainer(progress=False, clock=cpu_clock(), **cfg).fit()
    return Path(result.model_file)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["defects", "glyphs"], choices=["defects", "glyphs"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--weak-minutes", type=float, default=3.0)
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--runs-dir", default="runs/quality_budget")
    ap.add_argument("--reuse", action="store_true", help="load the models from --runs-dir when they are there")
    ap.add_argument("--cfg", type=float, nargs="*", default=[], help="built-in CFG scales besides the default")
    ap.add_argument("--w", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="autoguidance weights")
    ap.add_argument("--intervals", nargs="+", default=["all", "default"], choices=["all", "default"])
    ap.add_argument("--unconditional", action="store_true", help="train and guide unconditional models (a flat folder)")
    ap.add_argument("--weak", nargs="+", default=["run"],
                    help="weak models: 'run' (a separate --weak-minutes run) and/or fractions F of the main run (its EMA snapshot nearest F)")
    args = ap.parse_args()

    from difforge.pipeline import Pipeline

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    print(f"# {machine()}; loadavg before {loadavg()}")
    rows = []
    for dataset in args.datasets:
        jd = Judge(dataset, args.size, args.per_class)
        rows.append(dict(dataset=dataset, setting="real held-out (floor)", **jd.floor))
        source = data_source(dataset, args.size, args.per_class, args.runs_dir)
        cond = not args.unconditional
        main_file = train(dataset, args.size, args.minutes, args.runs_dir, args.per_class, args.reuse, source, cond)
        weak = {}
        for spec in args.weak:
            if spec == "run":
                weak[f"{args.weak_minutes:g}-min run"] = train(dataset, args.size, args.weak_minutes, args.runs_dir, args.per_class, args.reuse, source, cond)
            else:
                snaps = snapshots(main_file)
                frac = min(snaps, key=lambda f: abs(f - float(spec)))
                weak[f"snapshot at {frac:.2f}"] = snaps[frac]
        pipe = Pipeline.from_checkpoint(main_file)
        settings = [("CFG default" if cond else "unguided", {})] + [(f"CFG {s:g}", dict(cfg=s)) for s in args.cfg]
        settings += [(f"auto w {w:g}, {iv}, {name}", dict(cfg=w, guide_model=str(f), **({"cfg_interval": None} if iv == "all" else {})))
                     for name, f in weak.items() for w in args.w for iv in args.intervals]
        for label, opts in settings:
            t0 = time.perf_counter()
            if cond:
                out = pipe.generate(num=100 // len(pipe.class_names) + 1, class_label="all", seed=1000, **opts)
                labels = out.labels.numpy()
            else:  # no class to score: the accuracy column is what the judge's classes happen to be (ignore it)
                out = pipe.generate(num=100, seed=1000, **opts)
                labels = [0] * len(out.images)
            dt = (time.perf_counter() - t0) * 100 / len(out.images)
            rows.append(dict(dataset=dataset, setting=label, sample_s=round(dt, 1), **jd.score(out.images.numpy(), labels)))
            print(f"row: {rows[-1]} (loadavg {loadavg()})", flush=True)
    print(f"# loadavg after {loadavg()}; {args.size} px; main {args.minutes:g} CPU-min, weak {args.weak_minutes:g} CPU-min")
    head = ["dataset", "setting", "sample_s", "acc", "fd", "kid", "precision", "recall", "mem_px", "mem_feat"]
    print_table(rows, head)


if __name__ == "__main__":
    main()
