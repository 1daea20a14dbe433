"""`difforge eval --real DIR|ref.npz --fake DIR|samples.npz`: FID, sFID, KID, IS, precision/recall."""

from __future__ import annotations

import json

from ..errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score generated images against real ones (FID, sFID, KID, IS, precision/recall)",
        description=(
            "Compare generated images with real ones. Each side is an image folder (flat or class sub-folders), "
            "an .npz with arr_0 uint8 NHWC images (difforge sample --npz, guided-diffusion batches), or, for --real, "
            "a reference .npz saved by --save-ref. The Inception weights are read from disk: "
            "--inception-weights, $DIFFORGE_INCEPTION_WEIGHTS, or ~/.cache/difforge/pt_inception-2015-12-05-6726825d.pth."
        ),
    )
    p.add_argument("--real", required=True, metavar="DIR|NPZ", help="real images (folder or .npz) or a reference .npz")
    p.add_argument("--fake", default=None, metavar="DIR|NPZ", help="generated images (folder or .npz); may be left out with --save-ref")
    p.add_argument("--metrics", default=None, help="comma-separated: fid,sfid,kid,is,pr (default: all the extractor supports)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=50)
    p.add_argument("--features", default="inception", metavar="inception|PATH.pt",
                   help="feature extractor: the FID Inception network, or a TorchScript file mapping [0,1] (N,3,H,W) images to (N,D)")
    p.add_argument("--inception-weights", default=None, metavar="PATH", help="path of pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--download", action="store_true", help="download the Inception weights if they are not on disk")
    p.add_argument("--image-size", type=int, default=None,
                   help="square size real folder images are loaded at (default: the generated images' size)")
    p.add_argument("--save-ref", default=None, metavar="OUT.npz", help="save the real side's statistics and features for reuse")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="network precision (default fp32; bf16 numbers are not comparable with published ones)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--pr-k", type=int, default=3, help="neighbourhood size of precision/recall")
    p.add_argument("--seed", type=int, default=0, help="seed of KID's subsets")
    p.add_argument("--no-per-class", dest="per_class", action="store_false", help="skip per-class FID/KID")
    p.add_argument("--train-data", default=None, metavar="DIR",
                   help="also report memorisation: the fraction of --fake images nearer to a training image than the closest "
                        "1%% of training pairs are to each other (copies 1.0, novel images about 0), in pixels and in the "
                        "--features extractor's feature space")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..metrics.compare import compare

    def saved(count: int) -> None:
        if not args.json:
            print(f"saved reference statistics of {count} images to {args.save_ref}")

    if args.train_data and not args.fake:
        raise UserError("--train-data measures the --fake images' memorisation; give --fake too")
    result = compare(args.real, args.fake, metrics=args.metrics, features=args.features, inception_weights=args.inception_weights,
                     download=args.download, image_size=args.image_size, save_ref=args.save_ref, device=args.device,
                     precision=args.precision, batch_size=args.batch_size, kid_subsets=args.kid_subsets,
                     kid_subset_size=args.kid_subset_size, is_splits=args.is_splits, pr_k=args.pr_k, seed=args.seed,
                     per_class=args.per_class, progress=not args.quiet and not args.json, on_reference=saved)
    if result is None:
        return 0
    if args.train_data:
        from ..metrics.features import load_extractor
        from ..metrics.memorisation import memorisation_of_folders
        from ..runtime import resolve_device

        extractor = load_extractor(args.features, inception_weights=args.inception_weights, download=args.download,
                                   device=resolve_device(args.device), precision=args.precision)
        result["memorisation"] = m = memorisation_of_folders(args.fake, args.train_data, args.image_size, extractor=extractor,
                                                             progress=not args.quiet and not args.json)
        if not args.json:
            for space, r in (("pixels", m), ("features", m["features"])):
                print(f"memorisation ({space}): {r['fraction']:.3f} of {m['num_samples']} samples nearer to a training image "
                      f"than {r['threshold']:.3f} (1% of training pairs); median nearest distance {r['median_nearest']:.3f}")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0


def _fmt(v, std=None) -> str:
    if v is None:
        return "-"
    text = f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return f"{text} ± {std:.4f}" if std is not None else text


def format_table(r: dict) -> str:
    """The results as aligned text: overall metrics, then one row per class."""
    rows = [("FID", _fmt(r.get("fid"))) if "fid" in r else None,
            ("sFID", _fmt(r.get("sfid"))) if "sfid" in r else None,
            ("KID", _fmt(r["kid"], r["kid_std"])) if "kid" in r else None,
            ("IS", _fmt(r["is"], r["is_std"])) if "is" in r else None,
            ("precision", _fmt(r["precision"])) if "precision" in r else None,
            ("recall", _fmt(r["recall"])) if "recall" in r else None]
    rows = [x for x in rows if x]
    lines = [f"real       {r['real']} ({r['num_real'] or '?'} images)", f"fake       {r['fake']} ({r['num_fake']} images)",
             f"features   {r['extractor']}", ""]
    lines += [f"{k:<10} {v}" for k, v in rows]
    per = r.get("per_class")
    if per:
        cols = [c for c in ("fid", "kid") if any(c in row for row in per.values())]
        width = max(8, *(len(n) for n in per))
        lines += ["", f"{'class':<{width}}  {'real':>6}  {'fake':>6}" + "".join(f"  {c.upper():>18}" for c in cols)]
        for name, row in per.items():
            cells = [_fmt(row.get("fid")) if c == "fid" else _fmt(row.get("kid"), row.get("kid_std")) if row.get("kid") is not None else "-" for c in cols]
            lines.append(f"{name:<{width}}  {row['num_real']:>6}  {row['num_fake']:>6}" + "".join(f"  {c:>18}" for c in cells))
    return "\n".join(lines)
