"""Guidance on the built-in set: class accuracy of samples vs guidance scale, and the cost per image.

Three ways to steer a sample toward its class, each over a few scales:

- built-in CFG of a conditional model (one batched forward with the null class), scale s;
- two-model CFG, the conditional model plus a separately trained unconditional one, weight w
  (eps = (1 + w) eps_c - w eps_u, so w = s - 1);
- classifier guidance: the unconditional model plus a noisy classifier, scale s.

The judge is independent of all three: ``demo_quality.train_classifier``, a CNN trained on clean
real built-in images of another seed. Its accuracy on held-out real images is printed as the
ceiling. Cost: wall-clock seconds per image on this machine (same sampler and steps for all).

    python benchmarks/guidance.py --train --minutes 5      # train the three models, then measure
    python benchmarks/guidance.py --model C --uncond-model U --classifier K
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_quality import accuracy_by_class, to_float, train_classifier  # noqa: E402

from difforge.data.builtin import generate_arrays  # noqa: E402

NET = {"base_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "attention_resolutions": [8], "head_channels": 32}


def train_models(args) -> dict:
    """A conditional model, an unconditional one and a noisy classifier, on the same schedule."""
    from difforge.train.trainer import Trainer

    common = dict(runs_dir=args.runs_dir, image_size=args.size, builtin_per_class=args.per_class, noise_schedule="cosine", target="v",
                  batch_size=16, lr_schedule="warmup_cosine", ema_decay=0.995, checkpoint_every=100_000, log_every=50, seed=0)
    jobs = {
        "model": dict(run="guidance-cond", network_options=dict(NET), lr=1e-3, max_minutes=args.minutes),
        "uncond_model": dict(run="guidance-uncond", network_options=dict(NET), lr=1e-3, max_minutes=args.minutes, conditional=False),
        "classifier": dict(run="guidance-classifier", task="classifier", network="classifier-small", lr=3e-4,
                           max_minutes=args.classifier_minutes, eval_every=10**9, network_options={"num_head_channels": 32}),
    }
    files = {}
    for key, kw in jobs.items():
        run_dir = Path(args.runs_dir) / kw["run"]
        if (run_dir / "checkpoints" / "ema.safetensors").exists() and not args.retrain:
            files[key] = run_dir / "checkpoints" / "ema.safetensors"
            print(f"# reusing {files[key]}", flush=True)
            continue
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        result = Trainer(progress=False, **common, **kw).fit()
        files[key] = result.model_file
        print(f"# trained {key}: {result.steps} steps in {time.perf_counter() - t0:.0f} s -> {result.model_file}", flush=True)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="conditional model file")
    ap.add_argument("--uncond-model", help="unconditional model file (same schedule)")
    ap.add_argument("--classifier", help="noisy classifier file (difforge train-classifier, same schedule)")
    ap.add_argument("--train", action="store_true", help="train the three on the built-in set first (or reuse runs-dir's)")
    ap.add_argument("--retrain", action="store_true", help="with --train: train again even if the runs exist")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--minutes", type=float, default=5.0, help="--train: minutes per diffusion model")
    ap.add_argument("--classifier-minutes", type=float, default=3.0, help="--train: minutes for the noisy classifier")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--num", type=int, default=12, help="samples per class and setting")
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg-scales", default="1,2,3,5")
    ap.add_argument("--cfg-weights", default="0,1,2,4")
    ap.add_argument("--classifier-scales", default="0,1,3,10")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    files = train_models(args) if args.train else {"model": args.model, "uncond_model": args.uncond_model, "classifier": args.classifier}
    from difforge.pipeline import Pipeline

    cond = Pipeline.from_checkpoint(files["model"], precision="fp32")
    uncond = Pipeline.from_checkpoint(files["uncond_model"], precision="fp32")
    t0 = time.perf_counter()
    judge, names = train_classifier(cond.image_size, cond.channels)
    real, real_labels, _ = generate_arrays(size=cond.image_size, per_class=100, seed=2, channels=cond.channels)
    _, real_acc = accuracy_by_class(judge, to_float(real), torch.as_tensor(real_labels).long(), len(names))
    print(f"# judge trained in {time.perf_counter() - t0:.0f} s; accuracy on held-out real images {real_acc:.1%}", flush=True)

    common = dict(num=args.num, class_label="all", sampler=args.sampler, steps=args.steps, seed=1000, batch_size=64)
    settings = [("built-in CFG", "s", float(s), cond, dict(cfg=float(s))) for s in args.cfg_scales.split(",")]
    settings += [("two-model CFG", "w", float(w), cond, dict(cfg=float(w), uncond_model=uncond)) for w in args.cfg_weights.split(",")]
    settings += [("classifier guidance (uncond. model)", "s", float(s), uncond, dict(classifier=files["classifier"], classifier_scale=float(s)))
                 for s in args.classifier_scales.split(",")]
    rows = []
    for method, sym, value, pipe, kw in settings:
        t0 = time.perf_counter()
        out = pipe.generate(**common, **kw)
        dt = (time.perf_counter() - t0) / len(out.images)
        per_class, overall = accuracy_by_class(judge, to_float(out.images), out.labels, len(names))
        rows.append((method, f"{sym} = {value:g}", per_class, overall, dt))
        print(f"# {method} {sym}={value:g}: {overall:.1%} ({dt:.3f} s/image)", flush=True)

    print(f"\n{args.sampler}, {args.steps} steps, {args.num} samples per class and setting, {cond.image_size} px, "
          f"{torch.get_num_threads()} CPU thread(s); judge accuracy on real images {real_acc:.0%}\n")
    head = "| guidance | scale | " + " | ".join(names) + " | all | s/image |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for method, scale, per_class, overall, dt in rows:
        print(f"| {method} | {scale} | " + " | ".join(f"{a:.0%}" for a in per_class) + f" | {overall:.0%} | {dt:.3f} |")


if __name__ == "__main__":
    main()
