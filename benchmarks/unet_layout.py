"""Training-step throughput of the UNet presets, NCHW vs channels_last (fp32 by default).

    PYTHONPATH=. python benchmarks/unet_layout.py          # unet-tiny/-small/unet at 32 and 64 px
    PYTHONPATH=. python benchmarks/unet_layout.py --nets unet-tiny --sizes 32 --dtype bf16
    PYTHONPATH=. python benchmarks/unet_layout.py --threads 1   # on a shared machine: CPU-s is steady

One step = forward + MSE loss + backward + Adam step on random data, like the trainer's inner loop.
Prints images per wall second and per CPU second (the steadier number on a shared machine).

Measured on the AVX2 CPU this project first targeted (difforge/models/unet.py says what follows from it)
with ``--threads 1`` (torch 2.13, fp32, one Adam training step at batch 16, images per CPU-second;
the 2-core box was shared, so wall-clock 2-thread figures were not reproducible, while 1-thread CPU time is):

    ==========  ===  ==========  ======  =============  ========
    net         px   fwd GF/img  NCHW    channels_last  CL/NCHW
    ==========  ===  ==========  ======  =============  ========
    unet-tiny   32   0.50        30.8    30.5           0.99
    unet-tiny   64   1.97        7.7     6.9            0.90
    unet-small  32   1.85        8.2     7.9            0.97
    unet-small  64   6.63        2.6     2.3            0.88
    unet        32   3.25        5.2     4.8            0.92
    unet        64   11.8        1.4     1.4            0.94
    ==========  ===  ==========  ======  =============  ========
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from difforge import models


def _trainer_step(name: str, size: int, batch: int, channels_last: bool, dtype: str):
    """A closure running one training step of a fresh ``name`` network in the given layout."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = models.build(name, image_size=size).to(memory_format=fmt).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    noise = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,)).float()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext

    def step():
        with autocast():
            out = net(x, t)
        loss = torch.mean((out.float() - noise) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench(name: str, size: int, batch: int, seconds: float, dtype: str):
    """Images/s of NCHW and channels_last: {layout: (per wall second, per CPU second)}.

    The two layouts are timed alternately, step by step, so both see the same background load,
    and the median step is reported. Images per CPU second (process time) is the steadier number
    on a shared machine; with ``--threads 1`` it is the pure compute cost.
    """
    steps = {fmt: _trainer_step(name, size, batch, fmt, dtype) for fmt in (False, True)}
    wall = {False: [], True: []}
    cpu = {False: [], True: []}
    for _ in range(2):
        for step in steps.values():
            step()
    start = time.perf_counter()
    while len(wall[True]) < 5 or time.perf_counter() - start < 2 * seconds:
        for fmt, step in steps.items():
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            wall[fmt].append(time.perf_counter() - w0)
            cpu[fmt].append(time.process_time() - c0)
    return {fmt: (batch / statistics.median(wall[fmt]), batch / statistics.median(cpu[fmt])) for fmt in steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=["unet-tiny", "unet-small", "unet"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0, help="time each measurement at least this long")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.dtype}, batch {args.batch}")
    print(f"{'':<17}{'':>9} {'':>10} {'images / s (wall)':>26} {'images / CPU-s':>26}")
    print(f"{'net':<11} {'px':>4} {'params M':>9} {'fwd GF/img':>10} {'NCHW':>8} {'CL':>8} {'CL/NCHW':>8} "
          f"{'NCHW':>8} {'CL':>8} {'CL/NCHW':>8}")
    for name in args.nets:
        for size in args.sizes:
            net = models.build(name, image_size=size)
            gf = models.forward_gflops(net)
            params = models.count_parameters(net) / 1e6
            r = bench(name, size, args.batch, args.seconds, args.dtype)
            (nw, nc), (cw, cc) = r[False], r[True]
            print(f"{name:<11} {size:>4} {params:>9.2f} {gf:>10.3f} {nw:>8.1f} {cw:>8.1f} {cw / nw:>8.2f} "
                  f"{nc:>8.1f} {cc:>8.1f} {cc / nc:>8.2f}", flush=True)

if __name__ == "__main__":
    main()
