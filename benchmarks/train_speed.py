"""Training and sampling speed of the networks on this machine, against its own conv peak.

    python benchmarks/train_speed.py                 # default UNet at 32 and 64 px
    python benchmarks/train_speed.py --networks unet,unet-small --sizes 32 --precisions fp32
    python benchmarks/train_speed.py --networks unet-tiny --sizes 32 --precisions bf16 --compile off,on

Every configuration runs in a fresh subprocess so its peak RSS is its own. The conv peak is a
3x3 convolution forward+backward (fp32 and bf16) at a size that fills the cores; each training
result is printed as a fraction of the peak of its precision. ``--compile off,on`` also times each
configuration trained through ``torch.compile`` as ``--compile`` runs do (its compile, in the first
two steps, is not timed; its seconds are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def conv_peak(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """GFLOP/s of a 3x3 conv (128->128 ch, 32x32, batch 16) forward+backward."""
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    x = torch.randn(16, 128, 32, 32, requires_grad=True)
    flops = 3 * 2 * 16 * 128 * 128 * 9 * 32 * 32  # fwd + 2x for input and weight grads
    ctx = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else torch.autocast("cpu", enabled=False)
    n, t0 = 0, None
    while True:
        with ctx:
            y = conv(x)
        y.float().sum().backward()
        n += 1
        if n == 2:
            t0 = time.perf_counter()
        elif n > 2 and time.perf_counter() - t0 > seconds:
            return flops * (n - 2) / (time.perf_counter() - t0) / 1e9


def run_one(spec: dict) -> dict:
    """Train steps of one configuration; runs inside its own process."""
    from difforge.diffusion.objective import Objective
    from difforge.diffusion.schedule import Schedule
    from difforge.models import registry
    from difforge.models.info import forward_gflops

    torch.manual_seed(0)
    size, batch = spec["size"], spec["batch"]
    net = registry.build(spec["network"], image_size=size, in_channels=3, num_classes=4)
    gflops = forward_gflops(net)
    cl = spec["layout"] == "channels_last"
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, foreach=True)
    obj = Objective(Schedule.named("linear", 1000))
    model = net
    if spec.get("compile"):
        from difforge.train.compiling import compile_network

        model = compile_network(net, torch.device("cpu"))
    bf16 = spec["precision"] == "bf16"
    x = torch.randn(batch, 3, size, size)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,))

    def step():
        t = torch.randint(0, 1000, (batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = obj(model, x, t, torch.randn_like(x), y)["loss"].mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t_setup = time.perf_counter()
    step()
    step()  # (a compiled network compiles its graphs in these two)
    setup_s = time.perf_counter() - t_setup
    n, t0 = 0, time.perf_counter()
    while n < spec["min_steps"] or time.perf_counter() - t0 < spec["seconds"]:
        step()
        n += 1
    dt = (time.perf_counter() - t0) / n
    ips = batch / dt
    return {
        **spec,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "gflops_fwd": gflops,
        "images_per_s": ips,
        "setup_s": setup_s,
        "achieved_gflops": 3 * gflops * ips,  # forward + backward ~ 3x forward
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def sample_speed(network: str, size: int, steps: int = 50, batch: int = 16) -> float:
    from difforge.models import registry
    from difforge.pipeline import Pipeline, SampleConfig

    net = registry.build(network, image_size=size, in_channels=3, num_classes=4).eval()
    meta = {"network": {"name": network, "config": net.config},
            "diffusion": {"noise_schedule": "linear", "diffusion_steps": 1000, "target": "eps"},
            "data": {"image_size": size, "channels": 3, "class_names": ["a", "b", "c", "d"]}}
    pipe = Pipeline(net, meta, torch.device("cpu"), "fp32")
    t0 = time.perf_counter()
    pipe.sample(list(range(batch)), torch.arange(batch) % 4, SampleConfig(sampler="ddim", steps=steps, cfg=3.0, batch_size=batch))
    return (time.perf_counter() - t0) / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default="unet")
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--layouts", default="nchw,channels_last")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--compile", default="off", help="off, on or off,on: also (or only) train through torch.compile")
    ap.add_argument("--no-sampling", action="store_true")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(run_one(json.loads(args._child))))
        return

    threads = torch.get_num_threads()
    peaks = {"fp32": conv_peak(torch.float32), "bf16": conv_peak(torch.bfloat16, 1.0)}
    print(f"# {torch.__version__}, {threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"# 3x3 conv fwd+bwd peak: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s\n")
    compiles = [c == "on" for c in args.compile.split(",")]
    header = ("| network | px | batch | precision | layout | compiled (s) | params (M) | GFLOPs/img fwd | images/s | achieved GFLOP/s | "
              "of conv peak | peak RSS (GiB) |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for network in args.networks.split(","):
        for size in map(int, args.sizes.split(",")):
            for precision in args.precisions.split(","):
                for layout, compiled in [(lay, c) for lay in args.layouts.split(",") for c in compiles]:
                    slow = precision == "bf16" and peaks["bf16"] < 0.5 * peaks["fp32"]
                    spec = {"network": network, "size": size, "batch": args.batch, "precision": precision, "layout": layout,
                            "compile": compiled, "seconds": 1.0 if slow else args.seconds, "min_steps": 1 if slow else 3}
                    out = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True,
                                         text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
                    if out.returncode != 0:
                        print(f"| {network} | {size} | {args.batch} | {precision} | {layout} | {'yes' if compiled else 'no'} | failed: "
                              f"{out.stderr.strip().splitlines()[-1]} |")
                        continue
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    frac = r["achieved_gflops"] / peaks[precision]
                    done = f"yes ({r['setup_s']:.0f})" if compiled else "no"
                    print(f"| {network} | {size} | {args.batch} | {precision} | {layout} | {done} | {r['params_m']:.2f} | "
                          f"{r['gflops_fwd']:.2f} | {r['images_per_s']:.1f} | {r['achieved_gflops']:.1f} | {frac:.0%} | {r['peak_rss_gib']:.2f} |")
    if not args.no_sampling:
        print("\n| network | px | sampler | steps | seconds / image (batch 16, CFG) |\n|---|---|---|---|---|")
        for network in args.networks.split(","):
            for size in map(int, args.sizes.split(",")):
                print(f"| {network} | {size} | ddim | 50 | {sample_speed(network, size):.3f} |")


if __name__ == "__main__":
    main()
