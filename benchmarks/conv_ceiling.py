"""How close to the machine's conv peak can a network's training step get at all? Its convolutions, timed alone.

Issue 23 asks the demo-size network (unet-tiny) to train at >= 70% of the in-run 3x3 conv peak, the
rate of one *large* convolution (128 -> 128 channels, 32 x 32, batch 16; ``train_speed.conv_peak``).
A network's own convolutions are smaller: 32-64 channels, maps down to 8 x 8. This runs one forward
pass of the network to record every ``Conv2d`` call (input shape, memory layout, the module), times
each distinct one alone, forward and backward, in the run's precision and layout, and adds them up
by how often the network calls them. The whole step cannot be faster than that sum (everything else
-- attention, norms, activations, the optimizer -- takes time too), so

    ceiling = the step's FLOPs (3 x forward, as train_speed.py counts them) / the summed conv time

is an upper bound of the step's fraction of the conv peak, printed beside the step itself (timed as
``train_speed.py`` does). A ceiling below 70% means the target cannot be met by making the rest of
the step cheaper, only by convolutions that run faster at these shapes.

    python benchmarks/conv_ceiling.py                                   # unet-tiny and unet, 32 px, bf16
    python benchmarks/conv_ceiling.py --networks unet-tiny --sizes 32 64 --precisions fp32 bf16

Prints the CPU model and flags, the thread count and the load average before and after; run it on a
quiet machine, one benchmark at a time.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_speed import conv_peak, run_one  # noqa: E402

from difforge.models import registry  # noqa: E402
from difforge.models.info import forward_gflops  # noqa: E402


def conv_calls(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, bf16: bool):
    """``{(module, shape, channels_last): calls}`` of one forward pass."""
    calls = collections.Counter()

    def record(module, args):
        a = args[0]
        calls[(module, tuple(a.shape), a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous())] += 1

    handles = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x, t, y)
    finally:
        for h in handles:
            h.remove()
    return calls


def conv_seconds(module: torch.nn.Conv2d, shape, channels_last: bool, bf16: bool, first: bool, seconds: float = 0.3) -> float:
    """Seconds of one call of ``module`` on an input of ``shape``, forward and backward (the input's
    gradient too, unless it is the network's input), alone; the median of repeated runs."""
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(not first)
    times, start = [], time.perf_counter()
    for i in range(1000):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(x)
        out.float().sum().backward()
        if i >= 2:
            times.append(time.perf_counter() - t0)
        if i >= 7 and time.perf_counter() - start > seconds:
            break
    module.zero_grad(set_to_none=True)
    return float(torch.tensor(times).median())


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_line() -> str:
    model, flags = "?", []
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have]
    except OSError:
        pass
    return f"{model}, flags {' '.join(flags) or '-'}, {torch.get_num_threads()} torch threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["unet-tiny", "unet"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[32])
    ap.add_argument("--precisions", nargs="+", default=["bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--layouts", nargs="+", default=["channels_last"], choices=["nchw", "channels_last"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds of training steps per configuration")
    args = ap.parse_args()

    print(f"# {cpu_line()}; loadavg before {loadavg()}")
    peaks = {p: conv_peak(torch.bfloat16 if p == "bf16" else torch.float32, 1.5) for p in args.precisions}
    print("# 3x3 conv peak (128 -> 128 ch, 32 x 32, batch 16, fwd+bwd): " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks.items()))
    print()
    print("| network | px | precision | layout | conv calls | convs alone (ms) | step (ms) | convs' share of the step | "
          "convs alone: GFLOP/s | ceiling: % of peak | step: % of peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.networks:
        for size in args.sizes:
            for precision in args.precisions:
                for layout in args.layouts:
                    bf16, cl = precision == "bf16", layout == "channels_last"
                    torch.manual_seed(0)
                    net = registry.build(name, image_size=size, in_channels=3, num_classes=4)
                    gflops = forward_gflops(net)
                    if cl:
                        net = net.to(memory_format=torch.channels_last)
                    x = torch.randn(args.batch, 3, size, size)
                    x = x.contiguous(memory_format=torch.channels_last) if cl else x
                    calls = conv_calls(net, x, torch.randint(0, 1000, (args.batch,)), torch.randint(0, 4, (args.batch,)), bf16)
                    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
                    conv_s = sum(n * conv_seconds(m, shape, layout_cl, bf16, first=m is first_conv)
                                 for (m, shape, layout_cl), n in calls.items())
                    step = run_one(dict(network=name, size=size, batch=args.batch, precision=precision, layout=layout,
                                        seconds=args.seconds, min_steps=5))
                    step_s = args.batch / step["images_per_s"]
                    train_gflop = 3 * gflops * args.batch
                    print(f"| {name} | {size} | {precision} | {layout} | {sum(calls.values())} | {conv_s * 1e3:.1f} | {step_s * 1e3:.1f} | "
                          f"{conv_s / step_s:.0%} | {train_gflop / conv_s:.0f} | {train_gflop / conv_s / peaks[precision]:.0%} | "
                          f"{train_gflop / step_s / peaks[precision]:.0%} |", flush=True)
    print(f"\n# loadavg after {loadavg()}")


if __name__ == "__main__":
    main()
