"""Every network family side by side: parameters, forward GFLOPs, training throughput, peak RSS.

    PYTHONPATH=. python benchmarks/networks.py                       # all nets at 32 and 64 px, fp32
    PYTHONPATH=. python benchmarks/networks.py --nets dit-s/2 adm-small --sizes 32 --precisions fp32 bf16
    PYTHONPATH=. python benchmarks/networks.py --threads 1 --seconds 3  # a shared machine: CPU-s is steady

One training step = forward + MSE loss on eps + backward + Adam step on random data (3-channel,
unconditional), as the trainer's inner loop. Each configuration runs in a fresh subprocess, so
its peak RSS is its own (model, Adam state, activations and the interpreter, ~0.3 GB of which is
torch itself). Prints images per wall second and per CPU second; the latter is the steadier
number when other processes share the cores; "train GF/CPU-s" is 3 x forward GFLOPs x images
per CPU-second, the compute rate achieved (a multiply-add counts 2). bf16 runs under CPU autocast: on a CPU without
native bf16 (no AMX / avx512_bf16) it is emulated and much slower than fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

NETS = ["unet-tiny", "unet-small", "unet", "cspdarkunet-small", "cspdarkunet", "adm-small", "dit-s/4", "dit-s/2"]


def measure(name: str, size: int, precision: str, batch: int, seconds: float, threads: int) -> dict:
    """Run in the child: build, time training steps, report one JSON-able dict."""
    from difforge import models

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = models.build(name, image_size=size).train()
    params = models.count_parameters(net)
    gflops = models.forward_gflops(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size)
    noise = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,)).float()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

    def step():
        with autocast():
            out = net(x, t)
        loss = torch.mean((out.float() - noise) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: allocations, oneDNN kernel selection
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < 3 or time.perf_counter() - start < seconds:
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {
        "net": name, "px": size, "precision": precision, "params_m": params / 1e6, "gflops": gflops,
        "img_s": batch / statistics.median(wall), "img_cpu_s": batch / statistics.median(cpu), "steps": len(wall),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=NETS)
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0, help="time each configuration at least this long")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        name, size, precision = args.child.split(",")
        print(json.dumps(measure(name, int(size), precision, args.batch, args.seconds, args.threads)))
        return

    print(f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}, batch {args.batch}, >= {args.seconds:g} s per row")
    print(f"{'net':<18} {'px':>3} {'prec':>4} {'params M':>8} {'fwd GF/img':>10} {'img/s':>7} {'img/CPU-s':>9} "
          f"{'train GF/CPU-s':>14} {'peak RSS MB':>11}")
    for name in args.nets:
        for size in args.sizes:
            for precision in args.precisions:
                cmd = [sys.executable, __file__, "--child", f"{name},{size},{precision}", "--batch", str(args.batch),
                       "--seconds", str(args.seconds), "--threads", str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{name:<18} {size:>3} {precision:>4}  failed: {last}", flush=True)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                achieved = 3 * r["gflops"] * r["img_cpu_s"]  # a training step ~ 3 forwards
                print(f"{name:<18} {size:>3} {precision:>4} {r['params_m']:>8.2f} {r['gflops']:>10.3f} {r['img_s']:>7.1f} "
                      f"{r['img_cpu_s']:>9.1f} {achieved:>14.1f} {r['rss_mb']:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
