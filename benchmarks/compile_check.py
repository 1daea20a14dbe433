"""Does torch.compile train a network correctly here? Gradients of a compiled network against eager ones.

    python benchmarks/compile_check.py                          # unet-tiny at 64 px (folded) and 32 px, fp32 and bf16
    python benchmarks/compile_check.py --network unet --size 32 --backends inductor aot_eager

For each precision and torch.compile backend: one forward + backward of a class-conditional network
whose weights are perturbed away from their initialisation (at initialisation the output conv is
zero, so only it would get a gradient), on a fixed batch, compiled and eager; the table counts the
parameters whose gradient differs from eager by more than ``--tolerance`` (relative norm), among
those with a gradient that is not ~0, and shows the worst. Why it exists: with torch 2.13 on a CPU,
Inductor's bf16 backward was wrong (difforge/train/compiling.py refuses --compile there); run it
again after a PyTorch upgrade before lifting that rule. Prints the CPU and torch version.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch


def gradients(net, model, x, t, y, weight, bf16: bool) -> dict:
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x, t, y)
    (out.float() * weight).sum().backward()
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def compare(network: str, size: int, options: dict, precision: str, backend: str, tolerance: float, batch: int = 8) -> dict:
    from difforge.models import registry

    torch.manual_seed(0)
    net = registry.build(network, image_size=size, in_channels=1, num_classes=10, **options)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, w = torch.randn(batch, 1, size, size), torch.randn(batch, 1, size, size)
    t, y = torch.randint(0, 1000, (batch,)), torch.randint(0, 10, (batch,))
    eager = gradients(net, net, x, t, y, w, precision == "bf16")
    compiled = gradients(net, torch.compile(net, backend=backend), x, t, y, w, precision == "bf16")
    errors = {n: float((eager[n] - compiled.get(n, torch.zeros_like(eager[n]))).norm() / eager[n].norm())
              for n in eager if eager[n].norm() > 1e-3}
    off = {n: e for n, e in errors.items() if e > tolerance}
    worst = max(errors, key=errors.get)
    return dict(network=network, size=size, options=json.dumps(options), precision=precision, backend=backend,
                params=len(errors), off=len(off), worst=f"{worst} {errors[worst]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default="unet-tiny")
    ap.add_argument("--size", type=int, nargs="+", default=[64, 32])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--backends", nargs="+", default=["inductor"])
    ap.add_argument("--tolerance", type=float, default=0.05, help="relative gradient error that counts as wrong (bf16 round-off: ~0.01)")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| network | px | options | precision | backend | parameters compared | wrong (> tol.) | worst |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.size:
        options = {"patch_size": 2} if size >= 64 and args.network.startswith("unet") else {}
        for precision in args.precisions:
            for backend in args.backends:
                r = compare(args.network, size, options, precision, backend, args.tolerance)
                print("| " + " | ".join(str(r[k]) for k in ("network", "size", "options", "precision", "backend", "params", "off", "worst")) + " |", flush=True)


if __name__ == "__main__":
    main()
