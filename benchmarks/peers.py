"""difforge against diffusers, side by side in one run, at equal FLOPs and batch.

    pip install -e ".[bench]"                    # diffusers, for this benchmark only
    python benchmarks/peers.py                   # 32 and 64 px, fp32 (+ bf16 where the CPU has it): ~5 min quiet
    python benchmarks/peers.py --quick           # a tiny run that checks the script works (not a measurement)
    python benchmarks/peers.py --precisions bf16 --no-sampling   # the bf16 training rows only
    python benchmarks/peers.py --precisions bf16 --no-sampling --compile   # ... and difforge trained through torch.compile

The networks: difforge's default ``unet`` (class-conditional, 4 classes) and a diffusers
``UNet2DModel`` built to the same layout (block_out_channels 64,128,128,128, 2 layers per block,
attention at 16 and 8 px, head dim 32, scale-shift norm, a class embedding); the script counts
both forwards with torch's FlopCounterMode and refuses to compare if the FLOPs differ.

Measured, each configuration in a fresh subprocess (so its peak RSS is its own):
- training images/s (eps MSE on the linear schedule, AdamW, batch ``--batch``), fp32 / bf16, each framework in
  NCHW and channels_last: difforge's row is its faster layout (what its trainer's ``channels_last: auto``
  probe picks), diffusers' its training script's NCHW, with its channels_last beside it; difforge with its
  own optimizer (fused AdamW), diffusers with torch's foreach AdamW (its training script's plain
  ``torch.optim.AdamW`` would take the slower single-tensor path on a CPU);
  difforge through its Objective, diffusers through DDPMScheduler.add_noise + F.mse_loss;
- sampling seconds per 100 class-conditional images with CFG: diffusers' DDIMScheduler with 50 steps and
  batched CFG (scale 3); difforge's DDIM 50 guided at every step (the same work, so its ms per row compares
  the two frameworks' network calls), UniPC 20 guided at every step, and the default SampleConfig (UniPC 20,
  guidance only in CFG_INTERVAL); and milliseconds per network row (one image through the network once);
- the in-run 3x3 conv forward+backward peak, each training result as a fraction of it;
- CPU model and flags (lscpu), threads, /proc/loadavg before and after (a loaded machine makes
  every number meaningless: run it alone).
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

from difforge.pipeline.config import CFG_INTERVAL

try:  # the same in-run conv peak as the training benchmark, run as a script or as a module
    from train_speed import conv_peak
except ImportError:  # python -m benchmarks.peers
    from benchmarks.train_speed import conv_peak

CLASSES = 4
ATTN_RES = (16, 8)
LAYOUTS = ("nchw", "channels_last")  # both frameworks are timed in both; difforge's row is its faster (its trainer probes)


def build(framework: str, size: int):
    torch.manual_seed(0)
    if framework == "difforge":
        from difforge.models import registry

        return registry.build("unet", image_size=size, in_channels=3, num_classes=CLASSES)
    from diffusers import UNet2DModel

    res = [size // 2**i for i in range(4)]
    return UNet2DModel(
        sample_size=size, in_channels=3, out_channels=3, block_out_channels=(64, 128, 128, 128), layers_per_block=2,
        down_block_types=tuple("AttnDownBlock2D" if r in ATTN_RES else "DownBlock2D" for r in res),
        up_block_types=tuple("AttnUpBlock2D" if r in ATTN_RES else "UpBlock2D" for r in reversed(res)),
        attention_head_dim=32, norm_num_groups=32, resnet_time_scale_shift="scale_shift", num_class_embeds=CLASSES + 1,
    )


def call(framework: str, net, x, t, y):
    return net(x, t, y) if framework == "difforge" else net(x, t, class_labels=y).sample


def gflops(framework: str, size: int) -> float:
    """Forward GFLOPs per image, counted the same way for both (difforge.models.info's SDPA rule)."""
    from torch.utils.flop_counter import FlopCounterMode

    from difforge.models.info import _custom_flops

    net = build(framework, size)
    x, t, y = torch.zeros(1, 3, size, size), torch.full((1,), 500), torch.zeros(1, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_flops()) as c:
        call(framework, net, x, t, y)
    return c.get_total_flops() / 1e9


def train_speed(spec: dict) -> dict:
    """Training steps of one (framework, size, precision); returns images/s and peak RSS."""
    fw, size, batch, bf16 = spec["framework"], spec["size"], spec["batch"], spec["precision"] == "bf16"
    net = build(fw, size).train()
    if fw == "difforge":  # difforge's own optimizer (fused AdamW); diffusers' in its faster foreach form
        from difforge.train.optim import build_optimizer

        opt = build_optimizer(net.parameters(), "adamw", 1e-4, 0.0, torch.device("cpu"))
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, foreach=True)
    x0, y = torch.randn(batch, 3, size, size), torch.randint(0, CLASSES, (batch,))
    if spec.get("layout") == "channels_last":
        net, x0 = net.to(memory_format=torch.channels_last), x0.contiguous(memory_format=torch.channels_last)
    if fw == "difforge":
        from difforge.diffusion.objective import Objective
        from difforge.diffusion.schedule import Schedule

        obj = Objective(Schedule.named("linear", 1000))
        model = net
        if spec.get("compile"):  # as `difforge train --compile` trains once its gradient check has passed
            from difforge.train.compiling import compile_network

            model = compile_network(net, torch.device("cpu"))
        loss_fn = lambda t, eps: obj(model, x0, t, eps, y)["loss"].mean()  # noqa: E731
    else:
        from diffusers import DDPMScheduler

        sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        loss_fn = lambda t, eps: torch.nn.functional.mse_loss(  # noqa: E731
            net(sched.add_noise(x0, eps, t), t, class_labels=y).sample.float(), eps)

    def step():
        t, eps = torch.randint(0, 1000, (batch,)), torch.randn_like(x0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(t, eps)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    step()  # (a compiled network compiles in these two)
    n, t0 = 0, time.perf_counter()
    while n < spec["min_steps"] or time.perf_counter() - t0 < spec["seconds"]:
        step()
        n += 1
    return {"images_per_s": batch * n / (time.perf_counter() - t0)}


@torch.no_grad()
def sample_speed(spec: dict) -> dict:
    """Seconds for ``num`` images (CFG) and per network row, in batches of ``batch``."""
    fw, size, num, batch, steps = spec["framework"], spec["size"], spec["num"], spec["batch"], spec["steps"]
    bf16 = spec["precision"] == "bf16"
    net = build(fw, size).eval()
    rows = [0]
    if fw == "difforge":
        from difforge.pipeline import Pipeline, SampleConfig

        meta = {"network": {"name": "unet", "config": net.config},
                "diffusion": {"noise_schedule": "linear", "diffusion_steps": 1000, "target": "eps"},
                "data": {"image_size": size, "channels": 3, "class_names": [str(i) for i in range(CLASSES)]}}
        from difforge.models.layers import sampling_memory_format

        net = net.to(memory_format=sampling_memory_format(net, "bf16" if bf16 else "fp32"))  # as Pipeline.from_checkpoint
        inner = net.forward
        net.forward = lambda x, *a, **k: (rows.__setitem__(0, rows[0] + x.shape[0]), inner(x, *a, **k))[1]
        pipe = Pipeline(net, meta, torch.device("cpu"), "bf16" if bf16 else "fp32")
        config = SampleConfig(batch_size=batch)  # the defaults: UniPC 20, guidance in CFG_INTERVAL
        if "interval" in spec:
            config = config.replace(cfg_interval=None if spec["interval"] == "all" else tuple(spec["interval"]))
        if spec.get("sampler"):
            config = config.replace(sampler=spec["sampler"], steps=spec["sampler_steps"])
        if steps:
            config = config.replace(steps=steps)
        t0 = time.perf_counter()
        pipe.sample(list(range(num)), torch.arange(num) % CLASSES, config)
        dt = time.perf_counter() - t0
    else:
        from diffusers import DDIMScheduler

        sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
        t0 = time.perf_counter()
        for start in range(0, num, batch):
            b = min(batch, num - start)
            g = torch.Generator().manual_seed(start)
            x = torch.randn(b, 3, size, size, generator=g)
            y = torch.arange(start, start + b) % CLASSES
            sched.set_timesteps(steps or 50)
            for t in sched.timesteps:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = net(torch.cat([x, x]), t, class_labels=torch.cat([y, torch.full_like(y, CLASSES)])).sample.float()
                rows[0] += 2 * b
                cond, uncond = out.chunk(2)
                x = sched.step(uncond + 3.0 * (cond - uncond), t, x).prev_sample
        dt = time.perf_counter() - t0
    return {"seconds": dt, "seconds_per_100": 100 * dt / num, "rows": rows[0], "ms_per_row": 1000 * dt / rows[0]}


def peak_rss_gib() -> float:
    """This process's own peak RSS: VmHWM (ru_maxrss keeps the forking parent's peak across exec on Linux)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    out = train_speed(spec) if spec["kind"] == "train" else sample_speed(spec)
    return {**out, "peak_rss_gib": peak_rss_gib()}


def run_child(spec: dict) -> dict:
    res = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine() -> dict:
    from difforge.runtime import cpu_has_fast_bf16

    model, flags = "?", []
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma", "f16c"))]
    except OSError:
        pass
    return {"cpu": model, "flags": " ".join(flags), "fast_bf16": cpu_has_fast_bf16(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability()}


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--precisions", default="auto", help="fp32,bf16 or auto (bf16 only where the CPU has native bf16)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of training steps per configuration")
    ap.add_argument("--sample-num", type=int, default=32, help="images sampled per framework (reported per 100)")
    ap.add_argument("--sample-size", type=int, default=32)
    ap.add_argument("--no-sampling", action="store_true", help="training rows only")
    ap.add_argument("--compile", action="store_true", help="also difforge trained through torch.compile (--compile), in its faster layout")
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the script runs, measures nothing")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(child(json.loads(args._child))))
        return

    m = machine()
    precisions = (["fp32", "bf16"] if m["fast_bf16"] else ["fp32"]) if args.precisions == "auto" else args.precisions.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    seconds, min_steps, steps, num, batch = args.seconds, 3, None, args.sample_num, args.batch
    if args.quick:
        sizes, seconds, min_steps, steps, num, batch = [32], 0.1, 1, 2, 2, 2
    load_before = loadavg()
    print(f"# CPU {m['cpu']} ({m['flags']}); native bf16: {m['fast_bf16']}; {m['threads']} threads; torch {m['torch']} ({m['capability']})")
    print(f"# load average before: {load_before}" + ("   [--quick: NOT a measurement]" if args.quick else ""))
    peaks = {p: conv_peak(torch.bfloat16 if p == "bf16" else torch.float32, 0.3 if args.quick else 2.0) for p in precisions}
    print("# in-run 3x3 conv fwd+bwd peak: " + ", ".join(f"{p} {v:.1f} GFLOP/s" for p, v in peaks.items()))
    flops = {}
    for size in sorted(set(sizes + [args.sample_size if not args.quick else 32])):
        flops[size] = {fw: gflops(fw, size) for fw in ("difforge", "diffusers")}
        if abs(flops[size]["difforge"] - flops[size]["diffusers"]) > 1e-6 * flops[size]["difforge"]:
            raise SystemExit(f"forward FLOPs differ at {size} px: {flops[size]}; the comparison would not be at equal FLOPs")
    print("# forward GFLOPs / image (equal for both): " + ", ".join(f"{s} px {v['difforge']:.3f}" for s, v in flops.items()))

    print("\n| training | px | batch | precision | difforge img/s (layout) | diffusers img/s (NCHW) | ratio | diffusers channels_last | "
          "ratio vs diffusers' faster | difforge % of peak | diffusers % of peak | difforge RSS GiB | diffusers RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    compiled = []
    for size in sizes:
        for p in precisions:
            r = {(fw, lay): run_child({"kind": "train", "framework": fw, "size": size, "batch": batch, "precision": p, "layout": lay,
                                       "seconds": seconds, "min_steps": min_steps, "threads": m["threads"]})
                 for fw in ("difforge", "diffusers") for lay in LAYOUTS}
            if any("error" in v for v in r.values()):
                print(f"| | {size} | {batch} | {p} | failed: {r} |")
                continue
            ips = {k: v["images_per_s"] for k, v in r.items()}
            lay = max(LAYOUTS, key=lambda lay: ips["difforge", lay])  # what channels_last: auto's probe picks
            ours, theirs, best = ips["difforge", lay], ips["diffusers", "nchw"], max(ips["diffusers", x] for x in LAYOUTS)
            pct = {fw: 3 * flops[size][fw] * v / peaks[p] for fw, v in (("difforge", ours), ("diffusers", theirs))}
            print(f"| | {size} | {batch} | {p} | {ours:.1f} ({lay}) | {theirs:.1f} | {ratio(ours, theirs)} | "
                  f"{ips['diffusers', 'channels_last']:.1f} | {ratio(ours, best)} | {pct['difforge']:.0%} | {pct['diffusers']:.0%} | "
                  f"{r['difforge', lay]['peak_rss_gib']:.2f} | {r['diffusers', 'nchw']['peak_rss_gib']:.2f} |")
            if args.compile:
                compiled.append((size, p, lay, ours, theirs, run_child({"kind": "train", "framework": "difforge", "size": size,
                                 "batch": batch, "precision": p, "layout": lay, "seconds": seconds, "min_steps": min_steps,
                                 "threads": m["threads"], "compile": True})))
    if compiled:
        print("\n| difforge --compile | px | precision | layout | img/s | vs difforge eager | vs diffusers (NCHW) | % of peak | RSS GiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for size, p, lay, ours, theirs, c in compiled:
            if "error" in c:
                print(f"| | {size} | {p} | {lay} | failed: {c['error']} |")
                continue
            v = c["images_per_s"]
            print(f"| | {size} | {p} | {lay} | {v:.1f} | {ratio(v, ours)} | {ratio(v, theirs)} | "
                  f"{3 * flops[size]['difforge'] * v / peaks[p]:.0%} | {c['peak_rss_gib']:.2f} |")

    size = 32 if args.quick else args.sample_size
    if not args.no_sampling:
        sampling_table(precisions, size, num, batch, steps, m["threads"])
    print(f"\n# load average after: {loadavg()} (before: {load_before})")


def sampling_table(precisions, size: int, num: int, batch: int, steps, threads: int) -> None:
    """Seconds per 100 guided images: diffusers' DDIM-50 + CFG first, the speed-ups are against it."""
    print(f"\n| sampling ({size} px, class-conditional, CFG, batch {batch}) | precision | s / 100 images | ms / network row | rows / image | speed-up vs diffusers | RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for p in precisions:
        base = {"kind": "sample", "size": size, "num": num, "batch": batch, "precision": p, "steps": steps, "threads": threads}
        runs = [("diffusers DDIM-50 + CFG", {**base, "framework": "diffusers"}),
                ("difforge DDIM-50 + CFG (every step)", {**base, "framework": "difforge", "interval": "all", "sampler": "ddim", "sampler_steps": 50}),
                ("difforge UniPC 20, CFG every step", {**base, "framework": "difforge", "interval": "all"}),
                (f"difforge default (UniPC 20, CFG in {CFG_INTERVAL})", {**base, "framework": "difforge"})]
        ref = None
        for name, spec in runs:
            r = run_child(spec)
            if "error" in r:
                print(f"| {name} | {p} | failed: {r['error']} |")
                continue
            ref = ref or r["seconds_per_100"]
            print(f"| {name} | {p} | {r['seconds_per_100']:.1f} | {r['ms_per_row']:.1f} | {r['rows'] / num:.0f} | "
                  f"{ratio(ref, r['seconds_per_100'])} | {r['peak_rss_gib']:.2f} |")


if __name__ == "__main__":
    main()
