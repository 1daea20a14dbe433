"""x4 super-resolution on the built-in defect set (issue 20): bicubic vs the regression upscaler vs the
diffusion upsampler (SR3's plain x; the default residual x - bicubic(z), with and without
noise-conditioning augmentation) vs the cascade after a base model.

For every high-res size (``--sizes``, default 64 and 128: 16 -> 64 and 32 -> 128) each model is
trained with the same budget of ``--minutes`` *process CPU minutes* (one torch thread; the Trainer's
``clock`` is time.process_time() / torch threads, so a busy shared machine gives the same steps per budget as
a quiet one; wall seconds are printed too). Test images: fresh built-in images (seed 77) the
models never saw, degraded by the training degradation (antialiased bicubic x4). Per model:

- PSNR / SSIM of the output against the real high-res image ([0, 1] scale, metrics/image_quality.py);
- consistency PSNR: the output degraded again against the low-res input (the target is >= 35 dB);
- Frechet distance and KID in the penultimate features of a judge CNN (benchmarks/demo_quality.py)
  trained only on other real images (seed 1), against the real high-res test images;
- seconds per image (wall) with the sampling settings of the table (ddim, ``--steps``).

The cascade row: a base diffusion model trained for the same budget at the low size generates
class-conditional images (classes in turn), which the noise-augmented upsampler upscales at
``--noise-level`` passing the class; only FD / KID apply (there is no ground truth; its
consistency PSNR compares with the base model's own images). Peak RSS (``--rss``): a fresh
process upscales one 64 -> 256 px and one 256 -> 1024 px image (tiled) with each trained model
and reports ru_maxrss (the target is <= 2 GB at 1024 px).

    python benchmarks/super_resolution.py                      # the issue's protocol (about an hour of CPU)
    python benchmarks/super_resolution.py --sizes 64 --minutes 0.75 --test-per-class 8   # reduced
    python benchmarks/super_resolution.py --smoke              # a minute or two: does it run?
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from demo_quality import train_classifier  # noqa: E402
from quality_budget import cpu_clock, judge, loadavg, machine  # noqa: E402

from difforge.data.builtin import generate_arrays  # noqa: E402
from difforge.metrics.fid import fid_from_features  # noqa: E402
from difforge.metrics.kid import kernel_inception_distance  # noqa: E402

RSS_SCRIPT = r"""
import json, resource, sys, time, numpy as np, torch
from difforge.pipeline import Pipeline
from difforge.pipeline.upscale import Upscaler
torch.set_num_threads(1)
up = Upscaler.from_checkpoint(sys.argv[1], pipeline_cls=Pipeline)
low = np.random.RandomState(0).randint(0, 256, (int(sys.argv[2]), int(sys.argv[2]), 3), dtype=np.uint8)
kw = dict(steps=int(sys.argv[3])) if up.diffusion else dict(tile=96, overlap=8)
t = time.perf_counter()
out = up.upscale([low], tile_batch=8, **kw)[0]
try:  # VmHWM: this program's own peak; ru_maxrss keeps the forking parent's across exec on Linux
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
except OSError:
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"out": out.shape[0], "s": time.perf_counter() - t, "rss_mb": hwm}))
"""


def to_unit(images_nhwc) -> torch.Tensor:
    return torch.as_tensor(images_nhwc).permute(0, 3, 1, 2).float().div(255.0)


def quality(out_u8, hr_u8, low, deg, clf, real_feats) -> dict:
    from difforge.metrics.image_quality import psnr, ssim
    from difforge.pipeline.upscale import consistency

    row = {}
    if hr_u8 is not None:
        a, b = to_unit(out_u8), to_unit(hr_u8)
        row["psnr"] = psnr(a, b).clamp(max=100).mean().item()
        row["ssim"] = ssim(a, b).mean().item()
    row["cons_psnr"] = consistency(low, to_unit(out_u8) * 2 - 1, deg).clamp(max=100).mean().item()
    _, feats = judge(clf, out_u8)
    row["fd"] = fid_from_features(real_feats, feats)
    row["kid"] = kernel_inception_distance(real_feats, feats, subsets=20, subset_size=min(50, len(feats)))[0]
    return row


def upscale_all(up, low, labels, steps):
    """uint8 NHWC outputs and wall seconds per image."""
    from difforge.data.io import to_uint8
    from difforge.pipeline.upscale import UPSCALE_SAMPLING

    t0 = time.perf_counter()
    outs = []
    for i in range(len(low)):
        kw = dict(config=UPSCALE_SAMPLING.replace(steps=steps)) if up.diffusion else {}
        lab = int(labels[i]) if (labels is not None and up.class_names) else None
        outs.append(to_uint8(up.upscale_tensor(low[i : i + 1], lab, seed=i, **kw)))
    return torch.cat(outs).numpy(), (time.perf_counter() - t0) / len(low)


def peak_rss(model_file, low_px: int, steps: int) -> dict:
    res = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(model_file), str(low_px), str(steps)], capture_output=True, text=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1][:200]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def fit_or_reuse(args, clock, cfg):
    """Train ``cfg`` (a Trainer's keywords), or with ``--reuse`` take the model file a finished run of
    the same name left in ``--runs-dir`` (its step count read from the file)."""
    from types import SimpleNamespace

    from difforge.modelfile import read_metadata
    from difforge.train.trainer import Trainer

    path = Path(cfg["runs_dir"]) / cfg["run"] / "checkpoints" / "ema.safetensors"
    if args.reuse and path.is_file():
        print(f"# reusing {path}", flush=True)
        return SimpleNamespace(model_file=path, steps=int(read_metadata(path)["train"]["step"]))
    return Trainer(progress=False, clock=clock, **cfg).fit()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="high-res sizes (x4 from size / 4)")
    ap.add_argument("--minutes", type=float, default=3.0, help="process CPU minutes of training per model")
    ap.add_argument("--per-class", type=int, default=150, help="built-in training images per class")
    ap.add_argument("--test-per-class", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25, help="ddim steps of the diffusion upsampler and the base model")
    ap.add_argument("--noise-aug", type=float, default=0.2, help="s_max of the noise-augmented upsampler")
    ap.add_argument("--noise-level", type=float, default=0.1, help="the cascade's sampling noise level")
    ap.add_argument("--rss", choices=["all", "regression", "none"], default="all", help="peak-RSS probes at 256 and 1024 px (diffusion at 1024 is slow)")
    ap.add_argument("--runs-dir", default="runs/super_resolution")
    ap.add_argument("--smoke", action="store_true", help="64 px, 0.1 min, 2 test images per class")
    ap.add_argument("--reuse", action="store_true", help="use a model file already in --runs-dir (same run name) instead of training it again")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.minutes, args.per_class, args.test_per_class, args.steps, args.rss = [64], 0.1, 20, 2, 5, "regression"

    from difforge.data.degrade import Degradation, degrade, upsample
    from difforge.data.io import to_uint8
    from difforge.pipeline import Pipeline
    from difforge.pipeline.upscale import UPSCALE_SAMPLING, Upscaler, cascade

    torch.set_num_threads(1)  # with another process on a core, a second OpenMP thread spins at barriers and that counts as CPU time
    t_start = time.perf_counter()
    print(f"# {machine()}; budget: {args.minutes:g} process-CPU min per model (clock = process_time / torch threads); "
          f"loadavg before {loadavg()}")
    clock = cpu_clock()
    rows, rss_rows = [], []
    deg = Degradation(4, "bicubic")
    for size in args.sizes:
        low_size = size // 4
        hr, labels, names = generate_arrays(size=size, per_class=args.test_per_class, seed=77, channels=3)
        low = degrade(to_unit(hr) * 2 - 1, deg)
        clf, _ = train_classifier(size, 3, per_class=100 if args.smoke else 300, epochs=2 if args.smoke else 8, seed=1)
        _, real_feats = judge(clf, hr)
        common = dict(runs_dir=args.runs_dir, image_size=size, builtin_per_class=args.per_class, max_minutes=args.minutes, batch_size=16,
                      checkpoint_every=10**6, preview_num=4, preview_steps=5, scale=4)
        bic = to_uint8(upsample(low, 4))
        rows.append(dict(size=f"{low_size}->{size}", model="bicubic", steps="-", **quality(bic.numpy(), hr, low, deg, clf, real_feats), s_img=0.0))
        trained = {}
        aug_name = f"diffusion, residual + noise aug {args.noise_aug:g}"
        for key, name, kw in [("regression-plain", "regression (rdn-sr)", dict(task="sr-regression", sr_objective="regression", loss="mse", lr=1e-3)),
                              ("diffusion-plain", "diffusion, plain x (SR3)", dict(task="sr", sr_residual=False)),
                              ("diffusion-res", "diffusion, residual (default)", dict(task="sr")),
                              ("diffusion-resaug", aug_name, dict(task="sr", noise_aug=args.noise_aug))]:
            run = f"{size}px-{key}-{args.minutes:g}min"
            w0 = time.perf_counter()
            result = fit_or_reuse(args, clock, dict(common, run=run, **kw))
            up = Upscaler.from_checkpoint(result.model_file, pipeline_cls=Pipeline)
            trained[name] = result.model_file
            out, s_img = upscale_all(up, low, labels, args.steps)
            rows.append(dict(size=f"{low_size}->{size}", model=name, steps=result.steps, train_wall_s=round(time.perf_counter() - w0),
                             **quality(out, hr, low, deg, clf, real_feats), s_img=s_img))
        # the cascade: a base model at the low size, then the noise-augmented upsampler with the class
        base_cfg = dict(common, image_size=low_size, scale=4, run=f"{low_size}px-base-{args.minutes:g}min")
        w0 = time.perf_counter()
        base = fit_or_reuse(args, clock, base_cfg)
        pipe = Pipeline.from_checkpoint(base.model_file)
        up = Upscaler.from_checkpoint(trained[aug_name], pipeline_cls=Pipeline)
        n = len(hr)
        t0 = time.perf_counter()
        small = pipe.generate(n, steps=args.steps, seed=1000)
        big = cascade(pipe, small, up, seed=1000, noise_level=args.noise_level, config=UPSCALE_SAMPLING.replace(steps=args.steps))
        s_img = (time.perf_counter() - t0) / n
        small_low = to_unit(small.images.numpy()) * 2 - 1
        rows.append(dict(size=f"{low_size}->{size}", model=f"cascade (base + aug upsampler, s={args.noise_level:g})", steps=base.steps,
                         train_wall_s=round(time.perf_counter() - w0), **quality(big.images.numpy(), None, small_low, deg, clf, real_feats), s_img=s_img))
        if args.rss != "none" and size == args.sizes[0]:
            for name, path in trained.items():
                if "diffusion" in name and args.rss != "all":
                    continue
                for low_px in (64, 256):
                    if "diffusion" in name and low_px == 256 and size < 128:
                        continue  # 484 tiles of 16 px: run --sizes 128 for the 1024 px diffusion probe
                    rss_rows.append(dict(model=name, out_px=4 * low_px, **peak_rss(path, low_px, args.steps)))
        if args.rss == "all" and size >= 128:
            path = trained[aug_name]
            rss_rows.append(dict(model="diffusion + noise aug", out_px=1024, **peak_rss(path, 256, args.steps)))
    print(f"# loadavg after {loadavg()}; total wall {time.perf_counter() - t_start:.0f} s; steps = optimizer steps in the budget; "
          f"s/img = wall seconds per image (ddim {args.steps} steps for diffusion rows)")
    head = ["size", "model", "steps", "psnr", "ssim", "cons_psnr", "fd", "kid", "s_img"]
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in head) + " |")
    if rss_rows:
        print("\n| model | output px | peak RSS MB | s |\n|---|---|---|---|")
        for r in rss_rows:
            print(f"| {r['model']} | {r['out_px']} | {r.get('rss_mb', 0):.0f} | {r.get('s', float('nan')):.1f} |" if "error" not in r
                  else f"| {r['model']} | {r['out_px']} | error: {r['error']} | |")


if __name__ == "__main__":
    main()
