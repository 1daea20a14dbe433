"""Sampling speed on the CPU: the torch network vs its ONNX export run by ONNX Runtime.

    PYTHONPATH=. python benchmarks/onnx_speed.py                       # demo-size UNet, 32 px, 100 images, ddim 20
    PYTHONPATH=. python benchmarks/onnx_speed.py --num 200 --steps 50 --size 64 --threads 4
    PYTHONPATH=. python benchmarks/onnx_speed.py --model runs/x/checkpoints/ema.safetensors

Both backends sample through the same Pipeline (same sampler, seeds and batches; classifier-free
guidance batched into one forward) in float32 with the same thread count; only the network call
differs. Without ``--model`` the network is the demo's UNet (``difforge demo``: base 32, mult
1-2-2, attention at 8 px, 4 classes) with random weights; speed does not depend on the values.
Each backend runs one warm-up batch first, then ``--repeats`` timed runs (the best is reported).
The CPU model, its vector flags and /proc/loadavg before and after are printed with the table;
a load average above 1 means other work shared the cores (the table then says so).

Needs the ``[onnx]`` extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from difforge.cli.demo import DEMO_NETWORK
from difforge.export.onnx import OnnxNet, export_onnx
from difforge.modelfile import save_model_file
from difforge.models import registry
from difforge.pipeline import Pipeline
from difforge.runtime import set_threads


def cpu_info() -> str:
    name, flags = platform.processor() or "?", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vec = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name}; {os.cpu_count()} logical CPUs; flags: {', '.join(vec) or 'none of avx2/avx512/amx'}"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def demo_model(path: Path, size: int) -> Path:
    torch.manual_seed(0)
    net = registry.build("unet", image_size=size, in_channels=3, num_classes=4, **DEMO_NETWORK)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    meta = {"kind": "diffusion", "network": {"name": "unet", "config": net.config},
            "diffusion": {"diffusion_steps": 1000, "noise_schedule": "cosine", "target": "v", "loss": "mse", "learn_sigma": False},
            "data": {"image_size": size, "channels": 3, "class_names": ["scratch", "inclusion", "crack", "patch"]}, "weights": "ema"}
    save_model_file(path, net.state_dict(), meta)
    return path


def time_backend(pipe: Pipeline, args) -> float:
    opts = dict(sampler="ddim", steps=args.steps, cfg=args.cfg, batch_size=args.batch, precision="fp32")
    pipe.generate(num=args.batch, seed=0, **opts)  # warm-up (one batch)
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        pipe.generate(num=args.num, seed=0, **opts)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a model file (default: the demo-size UNet with random weights)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=3.0, help="guidance scale (1 = off: half the network work)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="threads for both backends (default: one per physical core)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        set_threads()
    threads = torch.get_num_threads()
    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else demo_model(Path(tmp) / "demo.safetensors", args.size)
        onnx_file = Path(tmp) / "model.onnx"
        r = export_onnx(model, onnx_file, check=True)
        torch_pipe = Pipeline.from_checkpoint(model, device="cpu", precision="fp32")
        onnx_pipe = Pipeline(OnnxNet(onnx_file, threads=threads), torch_pipe.meta, torch_pipe.device, "fp32", source=str(onnx_file))
        t_torch = time_backend(torch_pipe, args)
        t_onnx = time_backend(onnx_pipe, args)
    load_after = loadavg()
    evals = args.steps * (2 if args.cfg != 1 and torch_pipe.num_classes else 1)
    under_load = any(float(la.split()[0]) > 1 for la in (load_before, load_after) if la != "?")
    print(f"CPU: {cpu_info()}")
    print(f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, {threads} threads, float32")
    print(f"model: {torch_pipe.meta['network']['name']} {sum(p.numel() for p in torch_pipe.net.parameters()) / 1e6:.2f}M params, "
          f"{args.size if not args.model else torch_pipe.image_size} px; ddim {args.steps} steps, cfg {args.cfg:g} "
          f"({evals} image-forwards per image), batch {args.batch}; export max |diff| {r.max_abs_diff:.2g}")
    print(f"loadavg before {load_before}, after {load_after}" + ("  ** measured under load **" if under_load else ""))
    print()
    print(f"| backend      | seconds for {args.num} images | images/s | vs torch |")
    print("|---|---|---|---|")
    for name, t in (("torch", t_torch), ("onnxruntime", t_onnx)):
        print(f"| {name:<12} | {t:.2f} | {args.num / t:.2f} | {t_torch / t:.2f}x |")


if __name__ == "__main__":
    main()
