"""`difforge demo`: the built-in default end to end — train a small conditional model, sample per class.

Sized for a 2-core laptop CPU: 32 px images and a time budget (default 8 minutes of training) with
the training defaults (the ``fast`` preset, :mod:`difforge.train.presets`: no recipe of its own),
then a grid per class with the sampling defaults. Every setting can be changed by flag.
"""

from __future__ import annotations

from pathlib import Path

from ..pipeline.config import SampleConfig, cfg_defaults_text

DEFAULTS = SampleConfig()
DEMO_NETWORK = {  # the unet-tiny preset, the default network (kept for benchmarks/onnx_speed.py)
    "base_channels": 32,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [8],
    "head_channels": 32,
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train a small model on the built-in defect set and sample a grid per class",
        description="Train a small class-conditional model on the built-in industrial-defect dataset, "
        "then sample a grid per class and print where the files are.",
    )
    p.add_argument("--runs-dir", default="runs", help="folder of runs (default ./runs)")
    p.add_argument("--run", default="demo", help="run name (default demo)")
    p.add_argument("--minutes", type=float, default=8.0, help="training time budget in minutes (default 8)")
    p.add_argument("--max-steps", type=int, default=2000, help="stop earlier after this many steps")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--per-class", type=int, default=200, help="built-in images per class")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the training default)")
    p.add_argument("--num", type=int, default=16, help="samples per class")
    p.add_argument("--sampler", default=DEFAULTS.sampler, help=f"default {DEFAULTS.sampler}")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help=f"default {DEFAULTS.steps}")
    p.add_argument("--cfg", type=float, default=None, help=f"guidance scale (default: the model's, {cfg_defaults_text()})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def demo_config(args):
    from ..config import Config

    return Config().override(
        run=args.run,
        runs_dir=args.runs_dir,
        image_size=args.image_size,
        builtin_per_class=args.per_class,
        batch_size=args.batch_size,
        lr=args.lr,
        max_steps=args.max_steps,
        max_minutes=args.minutes,
        checkpoint_every=500,
        log_every=10,
        seed=args.seed,
    )


def run(args) -> int:
    from ..data.outputs import save_generated
    from ..pipeline import Pipeline
    from ..train.trainer import Trainer

    run_dir = Path(args.runs_dir) / args.run
    if (run_dir / "checkpoints" / "state.safetensors").exists():
        import shutil

        print(f"removing the previous demo run {run_dir}")
        shutil.rmtree(run_dir)
    trainer = Trainer(demo_config(args), progress=not args.quiet)
    result = trainer.fit()
    pipe = Pipeline.from_checkpoint(result.model_file)
    config = DEFAULTS.replace(sampler=args.sampler, steps=args.steps, cfg=args.cfg, batch_size=64)
    out = pipe.generate(num=args.num, class_label="all", config=config, seed=args.seed, progress=not args.quiet)
    written = save_generated(out, run_dir / "samples" / "demo", grid=True)
    print()
    print(f"trained {result.steps} steps ({result.epochs_done:.1f} epochs) on the built-in defect dataset: {trainer.pacer.reason}")
    print(f"model file: {result.model_file}")
    print(f"samples:    {len(written['images'])} images in {run_dir / 'samples' / 'demo'}")
    for g in written["grids"]:
        print(f"grid:       {g}")
    print(f"metrics:    {run_dir / 'metrics.csv'}")
    return 0
