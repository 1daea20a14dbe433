"""How long an evaluation takes: Inception feature throughput and the metrics' own cost.

    PYTHONPATH=. python benchmarks/eval_speed.py                      # fp32 and bf16, 3 batches of 16
    PYTHONPATH=. python benchmarks/eval_speed.py --batches 10 --batch 50 --precisions fp32
    PYTHONPATH=. python benchmarks/eval_speed.py --device cuda --batch 200

The network is the FID InceptionV3 with random weights (same cost as the real file), BatchNorm
folded and channels_last exactly as ``load_fid_inception`` returns it; inputs are uint8 images
at ``--size`` px, resized to 299 inside. The metrics run on random features of the real sizes
(2048-d pool, 2023-d spatial). The last table extrapolates to ``--n`` real vs ``--n`` fake images:
features of 2n images, then FID + sFID (two 2048-d matrix square roots), KID (100 subsets of
1000) and precision/recall (three n x n distance passes, timed at a smaller n and scaled by n^2).

bf16 autocast on a CPU without AVX-512-BF16/AMX is emulated and much slower than fp32; it is
measured anyway so the table says so (see ``runtime.cpu_has_fast_bf16``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import numpy as np
import torch


def feature_rate(device: torch.device, precision: str, batch: int, batches: int, size: int):
    """Median images per wall second and per CPU second of the Inception forward (all three outputs).

    Per CPU second (process time, all threads) is the steadier number on a shared machine.
    """
    from difforge.metrics.inception import FIDInception

    torch.manual_seed(0)
    net = FIDInception().eval().requires_grad_(False).fuse().to(device=device, memory_format=torch.channels_last)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    times, cpu = [], []
    with torch.inference_mode():
        for i in range(batches + 1):  # the first batch warms up and is not counted
            if device.type == "cuda":
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            with ctx():
                net(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
    return batch / statistics.median(times), batch / statistics.median(cpu)


def metric_seconds(n: int, pr_n: int) -> dict:
    """Seconds of each metric at n vs n features (precision/recall measured at pr_n and scaled)."""
    from difforge.metrics.fid import frechet_distance
    from difforge.metrics.kid import mmd2_unbiased
    from difforge.metrics.precision_recall import precision_recall

    rng = np.random.default_rng(0)
    out = {}
    d = 2048
    a = np.abs(rng.standard_normal((3000, d))) * 0.3
    b = np.abs(rng.standard_normal((3000, d))) * 0.3 + 0.01
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    t = time.perf_counter()
    frechet_distance(mu1, s1, mu2, s2)
    out["FID (2048-d sqrtm)"] = time.perf_counter() - t
    out["sFID (2023-d sqrtm)"] = out["FID (2048-d sqrtm)"] * (2023 / 2048) ** 3
    m = min(1000, n)
    t = time.perf_counter()
    mmd2_unbiased(a[:m], b[:m])
    out[f"KID (100 subsets of {m})"] = 100 * (time.perf_counter() - t)
    k = min(pr_n, n)
    x = np.abs(rng.standard_normal((k, d)))
    y = np.abs(rng.standard_normal((k, d)))
    t = time.perf_counter()
    precision_recall(x, y)
    out[f"precision/recall (timed at {k}, x{(n / k) ** 2:.0f})"] = (time.perf_counter() - t) * (n / k) ** 2
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--size", type=int, default=64, help="input image size before the resize to 299")
    p.add_argument("--n", type=int, default=10_000, help="images per side for the extrapolation")
    p.add_argument("--pr-n", type=int, default=2000, help="features per side at which precision/recall is timed")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from difforge.runtime import cpu_has_fast_bf16

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device}, {torch.get_num_threads()} threads of {os.cpu_count()} cores (load average {load:.1f}), "
          f"native bf16: {cpu_has_fast_bf16() if device.type == 'cpu' else 'n/a'}")
    print(f"batch {args.batch} x {args.batches} batches, {args.size} px -> 299 px\n")
    rates = {}
    print(f"{'precision':<10} {'images/s':>9} {'img/CPU-s':>10} {'ms/image':>9} {f'features, 2 x {args.n}':>22}")
    for prec in args.precisions.split(","):
        rates[prec], per_cpu = feature_rate(device, prec, args.batch, args.batches, args.size)
        print(f"{prec:<10} {rates[prec]:>9.2f} {per_cpu:>10.2f} {1000 / rates[prec]:>9.1f} {2 * args.n / rates[prec] / 60:>18.1f} min")
    print()
    secs = metric_seconds(args.n, args.pr_n)
    for name, s in secs.items():
        print(f"{name:<40} {s:>8.1f} s")
    total_metrics = sum(secs.values())
    print()
    for prec, rate in rates.items():
        total = 2 * args.n / rate + total_metrics
        print(f"{args.n} vs {args.n} images, {prec}: {total / 60:.1f} min ({2 * args.n / rate / 60:.1f} features + {total_metrics / 60:.1f} metrics)")


if __name__ == "__main__":
    main()
