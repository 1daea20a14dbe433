"""`difforge data defects|glyphs OUT`: write a built-in dataset (procedural defects, or grey glyphs) to a folder."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="make datasets", description="Make datasets.")
    dsub = p.add_subparsers(dest="data_command", metavar="KIND")
    dsub.required = True
    d = dsub.add_parser(
        "defects",
        help="write the built-in industrial-defect dataset",
        description="Write the built-in procedural industrial-surface dataset (metal and wood textures with "
        "scratch, inclusion, crack and patch defects; --materials adds concrete) as OUT/<class>/<class>_NNNNN.png. "
        "Deterministic for a seed.",
    )
    d.add_argument("out", metavar="OUT", help="output folder")
    d.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    d.add_argument("--per-class", type=int, default=200, help="images per class (default 200)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--channels", type=int, choices=(1, 3), default=3)
    d.add_argument("--materials", default="metal,wood", metavar="LIST",
                   help="the surfaces, equally likely: any of metal,wood,concrete (default metal,wood: the built-in set)")
    d.add_argument("--masks", action="store_true",
                   help="also write each image's exact defect mask and a 'good' class of defect-free surfaces: "
                   "OUT/images/<class>/X.png with OUT/masks/<class>/X.png (0 background, 255 defect)")
    d.add_argument("--captions", action="store_true",
                   help="also write metadata.jsonl (file_name, text, and the attributes): exact captions such as "
                   "'a large diagonal scratch at the top left on brushed steel', for train --text-encoder")
    d.set_defaults(func=run)
    g = dsub.add_parser(
        "glyphs",
        help="write the built-in grey glyph dataset (10 mirror-asymmetric letters)",
        description="Write 10 classes of grey letters (F G J K L P Q R S Z; random size, rotation, shear, weight and "
        "shading) as OUT/<letter>/<letter>_NNNNN.png, 1-channel PNGs. Unlike the defect set: shapes, not textures, and "
        "a horizontal flip changes the class. Deterministic for a seed.",
    )
    g.add_argument("out", metavar="OUT", help="output folder")
    g.add_argument("--size", type=int, default=32, help="image size in pixels (default 32)")
    g.add_argument("--per-class", type=int, default=150, help="images per class (default 150)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=run_glyphs)


def run(args) -> int:
    from ..config import materials_of
    from ..data.builtin import CLASSES, GOOD, check_materials, write_dataset
    from ..errors import UserError

    if args.size < 8 or args.per_class < 1:
        raise UserError("--size must be >= 8 and --per-class >= 1")
    try:
        materials = check_materials(materials_of(args.materials))
    except ValueError as e:
        raise UserError(f"--materials: {e}") from None
    out = write_dataset(args.out, size=args.size, per_class=args.per_class, seed=args.seed, channels=args.channels, masks=args.masks,
                        materials=materials)
    if getattr(args, "captions", False):
        from ..data.builtin_captions import write_builtin_captions

        meta = write_builtin_captions(out, args.size, args.per_class, args.seed, args.channels, masks=args.masks, materials=materials)
        print(f"captions: {meta}")
    if args.masks:
        names = (*CLASSES, GOOD)
        print(f"wrote {args.per_class * len(names)} images ({', '.join(names)}) to {out / 'images'} and their masks to {out / 'masks'}")
        return 0
    print(f"wrote {args.per_class * len(CLASSES)} images ({', '.join(CLASSES)}) to {out}")
    return 0


def run_glyphs(args) -> int:
    from ..data.glyphs import GLYPHS, write_glyphs
    from ..errors import UserError

    if args.size < 8 or args.per_class < 1:
        raise UserError("--size must be >= 8 and --per-class >= 1")
    out = write_glyphs(args.out, size=args.size, per_class=args.per_class, seed=args.seed)
    print(f"wrote {args.per_class * len(GLYPHS)} grey images ({' '.join(GLYPHS)}) to {out}")
    return 0
