"""Does a caption-conditioned model give what the caption asks, also for combinations it never saw?

Protocol (issue 21): the built-in defect set with its exact captions (and masks, as `difforge data
defects --masks --captions` writes them: a text run weighs the defect pixels, train/loss_masks.py) at 32 px. Some (defect,
material) combinations are held out of training (default: crack on wood, inclusion on metal).
``--materials`` chooses the surfaces (default metal,wood: the built-in set). With two, a held-out
defect was only ever trained on the *other* material, so the word and that material are one thing
to the model; with metal,wood,concrete it has seen the defect on two surfaces and the test is one
of composition (a defect it knows, on a surface it knows, never together).
Two models train on the rest for the same budget: the built-in text encoder (captions, unet-tiny
with cross-attention) and a class-conditional model (defect class only). Judge CNNs
(benchmarks/demo_quality.SmallCNN) for defect type and material, and a segmenter of the defect
(benchmarks/segment_judge.py) whose mask's centroid gives the position in the 3 x 3 grid by the
captions' own rule, train only on *real* images of another seed (every combination). Each model then makes one image per caption of real test images (a
third seed): seen combinations and held-out ones. Reported: per-attribute accuracy of the
judges on the samples (what was asked vs what the judge sees), the judges' accuracy on the real
test images (the ceiling), and seconds per image. The class model cannot be asked for a
material or a position, so its numbers there are what chance gives. Targets at 12 minutes:
>= 0.9 per attribute on seen combinations, >= 0.6 on held-out ones.

The budget is process CPU seconds divided by the torch threads (quality_budget.cpu_clock), so a
busy machine gives the same number of steps; wall seconds, the CPU and the load are printed.

    flock /tmp/difforge-bench.lock python benchmarks/text_conditioning.py               # full: 12 min per model
    flock /tmp/difforge-bench.lock python benchmarks/text_conditioning.py --minutes 3 --eval 60   # reduced
    python benchmarks/text_conditioning.py --models text --compose --reuse --runs-dir RUNS   # + composed prompts, no retraining
    python benchmarks/text_conditioning.py --models text --reuse --runs-dir RUNS_A RUNS_B   # several trained runs, one set of judges
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from demo_quality import to_float, train_classifier  # noqa: E402
from quality_budget import cpu_clock, loadavg, machine  # noqa: E402
from segment_judge import Segmenter, judged_positions, real_masks, train_segmenter  # noqa: E402

from difforge.cli.sample import parse_interval  # noqa: E402
from difforge.config import DataConfig, materials_of  # noqa: E402
from difforge.data.builtin import check_materials  # noqa: E402
from difforge.data.builtin_captions import MATERIALS as SURFACES  # noqa: E402
from difforge.data.builtin_captions import POSITIONS, generate_captioned  # noqa: E402
from difforge.data.captions import write_metadata  # noqa: E402
from difforge.data.io import to_uint8  # noqa: E402
from difforge.models.text_encoder import phrases  # noqa: E402
from difforge.pipeline import Pipeline  # noqa: E402
from difforge.pipeline.config import interval_json  # noqa: E402
from difforge.pipeline.places import caption_templates  # noqa: E402
from difforge.train.loss_masks import builtin_masks  # noqa: E402
from difforge.train.trainer import Trainer  # noqa: E402

DEFECTS = ("scratch", "inclusion", "crack", "patch")
ATTRS = {"defect": DEFECTS, "material": ("metal", "wood"), "position": POSITIONS}  # material: --materials


def composed_caption(caption: str, attrs, by: str = "attributes") -> str:
    """The caption as a composed prompt (difforge.pipeline.compose), so that a combination never
    trained on is asked as parts that each were. ``by="attributes"``: the rest of the sentence, the
    defect word and the surface: "a small at the top AND inclusion AND on brushed steel";
    ``by="phrases"``: the caption's phrases (models/text_encoder.phrases), what a model trained with
    --phrase-dropout saw alone: "a small inclusion AND at the top AND on brushed steel"."""
    if by == "phrases":
        return " AND ".join(phrases(caption))
    surface = f" on {SURFACES[attrs['material']]}"
    rest = caption.replace(surface, "").replace(f" {attrs['defect']} ", " ")
    return f"{rest} AND {attrs['defect']} AND {surface.strip()}"


def labels_of(attrs, key):
    return np.array([ATTRS[key].index(a[key]) for a in attrs])


def write_folder(root: Path, images, attrs, captions) -> Path:
    from PIL import Image

    records = []
    for i, (img, a, cap) in enumerate(zip(images, attrs, captions)):
        name = f"{a['defect']}/{a['defect']}_{i:05d}.png"
        (root / a["defect"]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / name)
        records.append({"file_name": name, "text": cap})
    write_metadata(root, records)
    return root


def write_masks(root: Path, attrs, masks) -> Path:
    """``root/<defect>/<defect>_<i>.png`` beside :func:`write_folder`'s images (same names: --masks finds them)."""
    from PIL import Image

    for i, (a, m) in enumerate(zip(attrs, masks)):
        (root / a["defect"]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(m.astype(np.uint8) * 255).save(root / a["defect"] / f"{a['defect']}_{i:05d}.png")
    return root


@torch.no_grad()
def judged(net, images_nhwc) -> np.ndarray:
    if isinstance(net, Segmenter):
        return judged_positions(net, images_nhwc)
    x = to_float(images_nhwc)
    return torch.cat([net(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)]).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=12.0, help="training budget per model in CPU minutes (default 12)")
    ap.add_argument("--per-class", type=int, default=300, help="training images per defect class before the hold-out")
    ap.add_argument("--judge-per-class", type=int, default=400)
    ap.add_argument("--judge-epochs", type=int, default=8)
    ap.add_argument("--eval", type=int, default=100, help="captions per group (seen / held-out)")
    ap.add_argument("--held-out", default="crack:wood,inclusion:metal", help="defect:material pairs never trained on")
    ap.add_argument("--materials", default="metal,wood",
                    help="the built-in set's surfaces (difforge.data.builtin.MATERIALS); metal,wood,concrete: see above")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's, pipeline/config.py: 4 for text, 1.5 at 32 px)")
    ap.add_argument("--cfg-interval", type=parse_interval, default="auto", metavar="LO,HI",
                    help="guidance interval (default auto: the model's, pipeline/config.py: 0.1,inf for text, 0.1,3 for classes; 'all' = every step)")
    ap.add_argument("--place-contrast", type=float, default=None, metavar="A",
                    help="the text model's place contrast (default: the pipeline's, pipeline/config.py PLACE_CONTRAST; 0: off)")
    ap.add_argument("--analogy", type=float, default=None, metavar="S",
                    help="the text model's analogy strength for held-out combinations (default: the pipeline's, 1; 0: off; "
                    "difforge/pipeline/analogy.py)")
    ap.add_argument("--models", nargs="+", choices=["text", "class"], default=["text", "class"], help="which models to train and score")
    ap.add_argument("--word-dropout", type=float, default=0.0, help="the text model's --word-dropout")
    ap.add_argument("--phrase-dropout", type=float, default=0.0, help="the text model's --phrase-dropout")
    ap.add_argument("--mask-weight", type=float, default=None,
                    help="the text model's --mask-weight (a defect pixel's loss weighs 1 + W; default: the trainer's auto)")
    ap.add_argument("--network-option", action="append", default=[], metavar="KEY=JSON",
                    help="a network option of the text model, e.g. input_coords=true (repeatable)")
    ap.add_argument("--network", default=None, help="the text model's network (default: the trainer's, auto)")
    ap.add_argument("--joint-mask", action="store_true",
                    help="train the text model to generate each image's defect mask as one more channel (task joint)")
    ap.add_argument("--runs-dir", nargs="+", default=None,
                    help="where the runs go (default: a temporary folder); with --reuse several, each scored by the same judges")
    ap.add_argument("--compose", action="store_true",
                    help="also ask the text model with composed prompts: rest AND defect AND surface (see composed_caption)")
    ap.add_argument("--compose-by", choices=("attributes", "phrases"), default="attributes",
                    help="how --compose splits a caption: rest / defect / surface, or its phrases (see composed_caption)")
    ap.add_argument("--batch-size", type=int, default=16, help="the models' training batch (default 16, the trainer's)")
    ap.add_argument("--seed", type=int, default=0, help="the models' training seed (run-to-run spread)")
    ap.add_argument("--reuse", action="store_true", help="score a model already in --runs-dir instead of training it again")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    held = {tuple(p.split(":")) for p in args.held_out.split(",") if p}
    materials = check_materials(materials_of(args.materials))
    ATTRS["material"] = materials
    print(f"# {machine()}; budget {args.minutes:g} CPU-min per model (process CPU / threads); loadavg before {loadavg()}")
    wall0 = time.perf_counter()
    all_runs = [Path(r) for r in args.runs_dir or [tempfile.mkdtemp(prefix="textbench-")]]
    if len(all_runs) > 1 and not args.reuse:
        ap.error("several --runs-dir are for --reuse (scoring models already trained); train one at a time")
    runs = all_runs[0]

    # -- data: training (seed 0, hold-out removed), judges (seed 1), test captions (seed 2)
    imgs, _, _, caps, attrs = generate_captioned(args.size, args.per_class, seed=0, materials=materials)
    train_masks = builtin_masks(DataConfig(image_size=args.size, builtin_per_class=args.per_class, builtin_materials=",".join(materials)),
                                len(imgs))[:, 0].numpy()  # the exact masks of those images, in the same order
    keep = [i for i, a in enumerate(attrs) if (a["defect"], a["material"]) not in held]
    data_dir = write_folder(runs / "data", imgs[keep], [attrs[i] for i in keep], [caps[i] for i in keep])
    # the exact masks, as `difforge data defects --masks` writes them (--masks: same relative paths as the images)
    write_masks(runs / "masks", [attrs[i] for i in keep], [train_masks[i] for i in keep])
    print(f"# training images: {len(keep)} of {len(imgs)} on {', '.join(materials)} "
          f"(held out: {', '.join(f'{d} on {m}' for d, m in sorted(held))})")
    j_imgs, _, _, _, j_attrs = generate_captioned(args.size, args.judge_per_class, seed=1, materials=materials)
    t_imgs, _, _, t_caps, t_attrs = generate_captioned(args.size, max(args.eval, 50), seed=2, materials=materials)
    judges = {}
    for key, names in ATTRS.items():
        if key == "position":  # where the defect is: its mask's centroid, the captions' own rule
            judges[key] = train_segmenter(*real_masks(args.size, args.judge_per_class, seed=1, materials=materials), epochs=12)
        else:
            judges[key], _ = train_classifier(args.size, 3, data=(j_imgs, labels_of(j_attrs, key), list(names)), epochs=args.judge_epochs)
    groups = {"seen": [], "held-out": []}
    for i, a in enumerate(t_attrs):
        groups["held-out" if (a["defect"], a["material"]) in held else "seen"].append(i)
    rng = np.random.default_rng(0)
    groups = {g: sorted(rng.permutation(ix)[: args.eval].tolist()) for g, ix in groups.items()}

    rows = []
    for g, ix in groups.items():  # the ceiling: the judges on real test images
        rows.append(dict(model="real images", group=g, n=len(ix), **{k: float((judged(judges[k], t_imgs[ix]) ==
                    labels_of([t_attrs[i] for i in ix], k)).mean()) for k in ATTRS}, s_per_image="-", steps="-"))

    clock = cpu_clock()
    common = dict(data=str(data_dir), masks=str(runs / "masks"), image_size=args.size, runs_dir=str(runs), max_minutes=args.minutes, batch_size=args.batch_size,
                  ema_select=False, preview_num=4, preview_steps=5, progress=False, seed=args.seed)
    for runs, kind in ((r, k) for r in all_runs for k in args.models):
        options = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.network_option)}
        extra = (dict(text_encoder="builtin", conditional=False, **({} if args.mask_weight is None else {"mask_weight": args.mask_weight}), word_dropout=args.word_dropout, phrase_dropout=args.phrase_dropout, **({"network_options": options} if options else {}),
                      **({"network": args.network} if args.network else {}), **({"task": "joint"} if args.joint_mask else {}))
                 if kind == "text" else dict(conditional=True))
        t0, run = time.perf_counter(), f"{kind}-{args.minutes:g}min"
        model_file = runs / run / "checkpoints" / "ema.safetensors"
        if len(all_runs) > 1 and not model_file.exists():
            sys.exit(f"no {kind} model to score in {runs} ({model_file} is missing)")
        trained = "reused"
        if not (args.reuse and model_file.exists()):
            model_file = Trainer(clock=clock, run=run, **common, **extra).fit().model_file
            trained = f"train {(time.perf_counter() - t0) / 60:.1f} wall-min"
        pipe = Pipeline.from_checkpoint(model_file, device="cpu", precision="fp32")
        if kind == "text" and "templates" not in pipe.meta["text"]:  # a file of before they were listed: the captions it was trained on
            pipe.meta["text"]["templates"] = caption_templates([caps[i] for i in keep])
        steps = pipe.meta["train"]["step"]
        asks = [(kind, False)] + ([(kind, True)] if kind == "text" and args.compose else [])
        for (kind, composed), (g, ix) in ((a, gi) for a in asks for gi in groups.items()):
            want = [t_attrs[i] for i in ix]
            t0 = time.perf_counter()
            if kind == "text":
                prompts = [composed_caption(t_caps[i], t_attrs[i], args.compose_by) if composed else t_caps[i] for i in ix]
                out = pipe.generate(num=1, prompt=prompts, seed=10_000, steps=args.steps, cfg=args.cfg, cfg_interval=args.cfg_interval,
                                    place_contrast=args.place_contrast, analogy=args.analogy).images
            else:
                names = pipe.class_names
                y = torch.tensor([names.index(a["defect"]) for a in want])
                out = to_uint8(pipe.sample(list(range(10_000, 10_000 + len(ix))), y, steps=args.steps, cfg=args.cfg,
                                           cfg_interval=args.cfg_interval))
            per_image = (time.perf_counter() - t0) / len(ix)
            acc = {k: float((judged(judges[k], out.numpy()) == labels_of(want, k)).mean()) for k in ATTRS}
            how = ", composed prompt" if composed else ""
            where = f"{runs.name}: " if len(all_runs) > 1 else ""
            rows.append(dict(model=f"{where}{kind}{how} ({steps} steps, {trained})", group=g, n=len(ix),
                             **acc, s_per_image=f"{per_image:.3f}", steps=steps))
    print(f"# loadavg after {loadavg()}; total wall {(time.perf_counter() - wall0) / 60:.1f} min; "
          f"sampling: the default sampler (SampleConfig), {args.steps} steps, cfg {args.cfg or 'the model default'}, "
          f"interval {'the model default' if args.cfg_interval == 'auto' else interval_json(args.cfg_interval)}, "
          f"place contrast {'the default' if args.place_contrast is None else f'{args.place_contrast:g}'}, "
          f"analogy {'the default' if args.analogy is None else f'{args.analogy:g}'}, batch 16, 1 image per caption")
    print("| model | combinations | n | defect | material | position | s/image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['group']} | {r['n']} | {r['defect']:.2f} | {r['material']:.2f} | {r['position']:.2f} | {r['s_per_image']} |")


if __name__ == "__main__":
    main()
