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
    from ..models import registry

    if args.networks:
        print("\n".join(registry.available()))
        return 0
    if args.samplers:
        from ..diffusion.samplers import available

        print("\n".join(available()))
        return 0
    if args.network:
        from ..models.info import count_parameters, forward_gflops

        registry.check_image_size(args.network, {}, args.image_size)
        net = registry.build(args.network, image_size=args.image_size, in_channels=args.channels, num_classes=args.num_classes)
        info = {
            "network": args.network,
            "image_size": args.image_size,
            "channels": args.channels,
            "parameters": count_parameters(net),
            "forward_gflops_per_image": round(forward_gflops(net), 3),
            "config": net.config,
        }
        _print(info, args.json)
        return 0
    if not args.model:
        raise UserError("give a model file, or --network NAME (see --networks)")
    from ..pipeline import Pipeline
    from ..modelfile import read_metadata

    if read_metadata(args.model).get("kind") == "vae":
        _print(_describe_vae(args.model), args.json)
        return 0
    _print(Pipeline.from_checkpoint(args.model, device="cpu", precision="fp32").describe(), args.json)
    return 0


def _describe_vae(path) -> dict:
    from ..codec import load_vae

    vae, meta = load_vae(path)
    size = int(meta["data"]["image_size"])
    return {
        "file": str(path),
        "kind": "vae",
        "network": meta["network"]["name"],
        "parameters": sum(p.numel() for p in vae.parameters()),
        "image_size": size,
        "channels": meta["data"]["channels"],
        "latent_shape": "x".join(map(str, vae.latent_shape(size))),
        "network_config": meta["network"]["config"],
        "training": {k: v for k, v in meta.get("vae", {}).items() if k != "val"},
        "validation": meta.get("vae", {}).get("val", {}),
        "trained": meta.get("train", {}),
    }


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
