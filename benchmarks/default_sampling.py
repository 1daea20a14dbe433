"""Seconds to sample 100 class-conditional 32 px images from the default model (issue 16's target: <= 60 s).

Trains the default model (``difforge train`` defaults: the ``fast`` preset's unet-tiny) for a few
steps on the built-in set - the weights do not change the time - or loads ``--model``, then times
``Pipeline.generate`` of 100 images (25 per class) with the sampling defaults (SampleConfig: UniPC
20 steps, CFG 3, batched) and, for comparison, with the old default (DDIM 50). Each setting runs
``--repeats`` times after a warm-up; the table gives the best and the median. The CPU model, its
flags, the torch threads and /proc/loadavg before and after are printed; a load above 1.5 marks the
numbers "under load".

    python benchmarks/default_sampling.py
    python benchmarks/default_sampling.py --model runs/x/checkpoints/ema.safetensors
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from quality_budget import loadavg, machine  # noqa: E402


def default_model(size: int, workdir: str) -> Path:
    from difforge.train.trainer import Trainer

    return Trainer(progress=False, run="speed", runs_dir=workdir, image_size=size, builtin_per_class=8, max_steps=2,
                   ema_select=False).fit().model_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a model file (default: the default model, trained 2 steps)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from difforge.pipeline import Pipeline
    from difforge.pipeline.config import SampleConfig
    from difforge.runtime import set_threads

    set_threads()
    before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else default_model(args.size, tmp)
        pipe = Pipeline.from_checkpoint(model)
        classes = max(1, len(pipe.class_names))
        per_class = -(-args.num // classes)
        default = SampleConfig()
        settings = [("default: " + f"{default.sampler} {default.steps}", default),
                    ("old default: ddim 50", default.replace(sampler="ddim", steps=50))]
        rows = []
        pipe.generate(num=2, class_label=0 if classes > 1 else None, config=default)  # warm-up
        for name, cfg in settings:
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                out = pipe.generate(num=per_class if classes > 1 else args.num, class_label="all" if classes > 1 else None,
                                    config=cfg, seed=r * 1000)
                times.append((time.perf_counter() - t0) * args.num / len(out.images))
            rows.append((name, cfg.cfg, min(times), statistics.median(times)))
    after = loadavg()
    under = float(before.split()[0]) > 1.0  # the run itself adds about its thread count to the average
    print(f"# {machine()}; model {pipe.meta.get('network', {}).get('name', model.name) if isinstance(pipe.meta.get('network'), dict) else model.name}, {args.size} px, "
          f"{sum(p.numel() for p in pipe.net.parameters()) / 1e6:.2f} M parameters")
    print(f"# loadavg before {before}, after {after}" + ("  ** under load **" if under else ""))
    print(f"| sampling {args.num} class-conditional {args.size} px images | cfg | best s | median s |")
    print("|---|---|---|---|")
    for name, cfg, best, med in rows:
        print(f"| {name} | {cfg:g} | {best:.1f} | {med:.1f} |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
