"""`difforge info MODEL_FILE` or `difforge info --network NAME --image-size S`."""

from __future__ import annotations

import json

from ..errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a model file or a network", description="Describe a model file, or a network's size and cost.")
    p.add_argument("model", nargs="?", metavar="MODEL_FILE")
    p.add_argument("--network", default=None, help="describe a network: parameters and forward GFLOPs per image")
    p.add_argument("--image-size", "--image_size", dest="image_size", type=int, default=64)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=0)
    p.add_argument("--networks", action="store_true", help="list the available networks")
    p.add_argument("--samplers", action="store_true", help="list the available samplers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.networks:
        from ..models.registry import available

        print("\n".join(available()))
        return 0
    if args.samplers:
        from ..diffusion.samplers import available

        print("\n".join(available()))
        return 0
    if args.network:
        from ..models.info import describe_network

        _print(describe_network(args.network, args.image_size, args.channels, args.num_classes), args.json)
        return 0
    if not args.model:
        raise UserError("give a model file, or --network NAME (see --networks)")
    _print(_describe_file(args.model), args.json)
    return 0


def _describe_file(path) -> dict:
    """A VAE file's description, or a diffusion model's (Pipeline.describe); NaN/Inf weights are
    reported in ``nonfinite_weights``, not refused."""
    from ..modelfile import read_metadata

    if read_metadata(path).get("kind") == "vae":
        from ..codec import load_vae
        from ..models.info import describe_vae

        return describe_vae(*load_vae(path, check_weights=False), path)
    from ..pipeline import Pipeline

    if read_metadata(path).get("kind") == "upscaler":  # a regression upscaler (difforge train-sr --objective regression)
        from ..pipeline.upscale import Upscaler

        return Upscaler.from_checkpoint(path, device="cpu", precision="fp32").describe()
    return Pipeline.from_checkpoint(path, device="cpu", precision="fp32", check_weights=False).describe()


def _print(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(map(str, v)) or "-"
        elif k == "parameters":
            v = f"{v:,} ({v / 1e6:.2f}M)"
        print(f"{k:<{width}}  {v}")
