"""Images/s of DDP training with 1 vs 2 processes (gloo, 1 thread each), and the all-reduce share.

    python benchmarks/distributed.py [--network unet-tiny] [--size 32] [--batch 16] [--steps 20]

Each configuration trains the same network on random data for ``--steps`` steps after a
warm-up. The all-reduce share is 1 - (step time without gradient sync) / (step time with it),
measured in the same 2-process group with DDP's ``no_sync``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank: int, world: int, args, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    from difforge.diffusion.objective import Objective
    from difforge.diffusion.schedule import Schedule
    from difforge.models import registry

    torch.manual_seed(0)
    net = registry.build(args.network, image_size=args.size, in_channels=3, num_classes=4)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, foreach=True)
    obj = Objective(Schedule.named("linear", 1000))
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 4, (args.batch,))

    def step(sync: bool):
        ctx = model.no_sync() if (world > 1 and not sync) else contextlib.nullcontext()
        with ctx:
            loss = obj(model, x, torch.randint(0, 1000, (args.batch,)), torch.randn_like(x), y)["loss"].mean()
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = {}
    for sync in (True, False):
        for _ in range(3):
            step(sync)
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(sync)
        times[sync] = (time.perf_counter() - t0) / args.steps
    if rank == 0:
        out.put((times[True], times[False]))
    if world > 1:
        dist.destroy_process_group()


def run(world: int, args, port: int):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, args, port, q)) for r in range(world)]
    for p in procs:
        p.start()
    res = q.get(timeout=1200)
    for p in procs:
        p.join()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default="unet-tiny")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16, help="per process")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    print(f"# {args.network} {args.size}px, batch {args.batch} per process, 1 thread per process, gloo, {os.cpu_count()} CPUs")
    print("| processes | global batch | s/step | images/s | all-reduce share |\n|---|---|---|---|---|")
    for world, port in ((1, 29611), (2, 29612)):
        t_sync, t_nosync = run(world, args, port)
        share = max(0.0, 1 - t_nosync / t_sync) if world > 1 else 0.0
        print(f"| {world} | {args.batch * world} | {t_sync:.3f} | {args.batch * world / t_sync:.1f} | {share:.0%} |")


if __name__ == "__main__":
    main()
