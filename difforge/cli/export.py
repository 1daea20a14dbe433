"""`difforge export SRC --format FMT --out DIR`: a synth/sample output or a masks folder as a detector dataset."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..export.datasets import FORMATS

    p = sub.add_parser(
        "export",
        help="write images + masks as an MVTec AD / YOLO / YOLO-seg / COCO / ImageFolder dataset",
        description="Export SRC - a folder with manifest.jsonl (difforge synth / sample output) or a folder of images with "
        "masks (MVTec AD layout, or images/ + masks/ pairs; marked real) - as a dataset a detector trains on. "
        "Boxes come from the masks' 8-connected components, polygons from their outer contours. Every exported "
        "image gets a line in OUT/manifest.jsonl (its source line + split, boxes, exported paths). OUT is written "
        "into a hidden temporary folder and renamed at the end: it is complete or untouched. yolo-seg and coco "
        "need: pip install 'difforge[export]'. (export-onnx is a different command: a model file to ONNX.)",
    )
    p.add_argument("src", metavar="SRC", help="synth/sample output folder (with manifest.jsonl) or an images+masks folder")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="the dataset layout to write")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must be new or empty, or give --overwrite)")
    p.add_argument("--split", default="train=0.8,val=0.2", metavar="NAME=FRAC,...",
                   help="train/val/test fractions, stratified by source and class (default train=0.8,val=0.2); "
                   "MVTec: the train split's good images form train/good, everything else is test/")
    p.add_argument("--real", metavar="REAL_DIR", help="also export these real images and masks (flagged real in the manifest)")
    p.add_argument("--classes", metavar="A,B,...", help="class names in id order (default: the classes found, sorted); "
                   "an image of another class is an error")
    p.add_argument("--segmentation", default="polygon", choices=["polygon", "rle"],
                   help="COCO segmentation: polygon (outer contour; default) or rle (exact mask, holes kept)")
    p.add_argument("--synthetic-split", dest="synthetic_split", default="train", choices=["train", "all"],
                   help="with --real: train (default) puts every synthetic image in the train split, so val/test are real only; "
                   "all splits them like the real ones")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (only once the new export is complete)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split assignment (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export.datasets import export_dataset

    classes = args.classes.split(",") if args.classes else None
    r = export_dataset(args.src, args.format, args.out, split=args.split, real=args.real, overwrite=args.overwrite,
                       seed=args.seed, classes=classes, segmentation=args.segmentation, synthetic_split=args.synthetic_split,
                       progress=not args.quiet)
    splits = ", ".join(f"{k} {v}" for k, v in r.per_split.items())
    print(f"wrote {r.out} ({r.format}): {r.images} images ({splits}), {r.instances} instances, "
          f"classes {', '.join(r.classes) or '-'}; manifest.jsonl" + "".join(f", {f}" for f in r.index_files))
    return 0
