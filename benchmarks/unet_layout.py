"""Training-step throughput of the UNet presets, NCHW vs channels_last (fp32 by default).

    python benchmarks/unet_layout.py                       # unet-tiny/-small/unet at 32 and 64 px
    python benchmarks/unet_layout.py --nets unet-tiny --sizes 32 --dtype bf16

One step = forward + MSE loss + backward + Adam step on random data, like the trainer's inner loop.
Prints images/s and the achieved GFLOP/s (3 x forward FLOPs per image, the usual estimate).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from difforge import models


def bench(name: str, size: int, batch: int, channels_last: bool, seconds: float, dtype: str) -> float:
    torch.manual_seed(0)
    net = models.build(name, image_size=size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
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

    for _ in range(2):
        step()
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


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
    print(f"{'net':<11} {'px':>4} {'params M':>9} {'fwd GF/img':>10} {'NCHW img/s':>11} {'CL img/s':>9} "
          f"{'CL/NCHW':>8} {'CL GFLOP/s':>10}")
    for name in args.nets:
        for size in args.sizes:
            net = models.build(name, image_size=size)
            gf = models.forward_gflops(net)
            params = models.count_parameters(net) / 1e6
            nchw = bench(name, size, args.batch, False, args.seconds, args.dtype)
            cl = bench(name, size, args.batch, True, args.seconds, args.dtype)
            print(f"{name:<11} {size:>4} {params:>9.2f} {gf:>10.3f} {nchw:>11.1f} {cl:>9.1f} {cl / nchw:>8.2f} "
                  f"{3 * gf * cl:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
