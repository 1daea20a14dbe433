"""Does torch.compile train a network correctly here? Compiled gradients against eager ones.

    python benchmarks/compile_check.py                          # unet-tiny at 64 px (folded) and 32 px, fp32 and bf16
    python benchmarks/compile_check.py --network adm --size 16 --layouts nchw channels_last
    python benchmarks/compile_check.py --plain-upsampling       # the networks' upsampling as F.interpolate again

For each size, layout, precision and torch.compile backend: one forward + backward of a
class-conditional network whose weights are perturbed away from their initialisation (at
initialisation the output conv is zero, so only it would get a gradient), on a fixed batch,
through the check every ``--compile`` run makes on itself (difforge/train/compiling.py,
``gradient_problem``): eager fp32 is the reference; a parameter is off when the compiled
gradient is further from it than twice eager's own distance in the same precision plus 0.02.

Why it exists: with torch 2.13 on a CPU, Inductor computed the backward of nearest-neighbour
upsampling wrongly in bf16 inside a whole UNet or ADM (no gradient below the last upsampling);
the networks now upsample through ``layers.upsample_nearest2x``, which Inductor gets right.
``--plain-upsampling`` puts ``F.interpolate`` back, so after a PyTorch upgrade this shows whether
that detour is still needed. Prints the CPU and torch version.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import platform

import torch
import torch.nn.functional as F


def plain_upsampling() -> None:
    """Make every network upsample through F.interpolate, compiled or not (the code the bug was in)."""
    from difforge.models import adm, cspdarkunet, unet

    for module in (adm, cspdarkunet, unet):
        module.upsample_nearest2x = lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest")


def check(network: str, size: int, layout: str, precision: str, backend: str, batch: int = 8) -> dict:
    from difforge.models import registry
    from difforge.train.compiling import gradient_problem

    torch._dynamo.reset()
    torch.manual_seed(0)
    options = {"patch_size": 2} if size >= 64 and network.startswith("unet") else {}
    net = registry.build(network, image_size=size, in_channels=1, num_classes=10, **options)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, w = torch.randn(batch, 1, size, size), torch.randn(batch, 1, size, size)
    if layout == "channels_last":
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    t, y = torch.randint(0, 1000, (batch,)), torch.randint(0, 10, (batch,))
    loss = lambda model: (model(x, t, y).float() * w).sum()  # noqa: E731
    autocast = (functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext)
    problem = gradient_problem(net, torch.compile(net, backend=backend), loss, autocast)
    return dict(network=network, size=size, layout=layout, precision=precision, backend=backend,
                parameters=sum(1 for _ in net.parameters()), verdict=problem or "right")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default="unet-tiny")
    ap.add_argument("--size", type=int, nargs="+", default=[64, 32])
    ap.add_argument("--layouts", nargs="+", default=["channels_last"], choices=["nchw", "channels_last"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--backends", nargs="+", default=["inductor"])
    ap.add_argument("--plain-upsampling", action="store_true", help="upsample with F.interpolate also when compiled")
    args = ap.parse_args()
    if args.plain_upsampling:
        plain_upsampling()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
          f"{', upsampling: F.interpolate' if args.plain_upsampling else ''}")
    print("| network | px | layout | precision | backend | parameters | compiled gradients |")
    print("|---|---|---|---|---|---|---|")
    for size in args.size:
        for layout in args.layouts:
            for precision in args.precisions:
                for backend in args.backends:
                    r = check(args.network, size, layout, precision, backend)
                    print("| " + " | ".join(str(r[k]) for k in ("network", "size", "layout", "precision", "backend", "parameters", "verdict")) + " |", flush=True)


if __name__ == "__main__":
    main()
