"""`difforge train-classifier`: a noisy classifier for classifier guidance, through the shared loop."""

from __future__ import annotations

import argparse

from .seedtools import add_train_flags
from .train import add, add_data_flags, add_loop_flags, number_or_auto, overrides_from_args

# guided-diffusion's classifier flags -> options of the classifier networks
CLASSIFIER_FLAGS = {
    "num_channels": ("--classifier-width", int, "channels of the first level (default: the preset's)"),
    "num_res_blocks": ("--classifier-depth", int, "residual blocks per level"),
    "attention_resolutions": ("--classifier-attention-resolutions", str, "feature-map widths with attention, e.g. 16,8"),
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-classifier",
        help="train a noisy classifier p(y | x_t) for classifier guidance",
        description="Train a time-conditioned classifier on noised images x_t (ADM's encoder with attention pooling) "
        "for `difforge sample MODEL --classifier FILE --classifier-scale S`. Use the same --noise-schedule and "
        "--diffusion-steps as the diffusion model it will guide. Reports accuracy by noise level.",
    )
    add_data_flags(p)
    g = p.add_argument_group("classifier")
    add(g, "--network", dest="network", help="classifier-tiny, classifier-small (default) or classifier (guided-diffusion's size)")
    for key, (flag, typ, text) in CLASSIFIER_FLAGS.items():
        add(g, flag, dest=f"clf_{key}", type=typ, help=text)
    add(g, "--network-option", dest="network_option", action="append", metavar="KEY=VALUE", help="any other classifier setting (repeatable)")
    g = p.add_argument_group("the diffusion model to guide")
    add(g, "--noise-schedule", dest="noise_schedule", help="its schedule: linear, cosine, sqrt_linear or sqrt (default linear)")
    add(g, "--diffusion-steps", dest="diffusion_steps", type=int, help="its T (default 1000)")
    add(g, "--noise-shift", dest="noise_shift", type=number_or_auto, metavar="SHIFT|auto",
        help="its noise shift (default auto: what `difforge train` picks for a cosine model of this size, else 1; "
             "`difforge info MODEL` shows it)")
    add_loop_flags(p)
    add_train_flags(p, classifier=True)
    p.set_defaults(func=run)


def classifier_overrides(args) -> dict:
    """Config overrides of `train-classifier`: train.task = classifier and the classifier's options."""
    from ..train.start import network_options

    out = overrides_from_args(args)
    out["task"] = "classifier"
    out.setdefault("labels_from_filenames", True)  # guided-diffusion's classifier_train reads classes off file names
    keys = [*CLASSIFIER_FLAGS, "resblock_updown", "use_scale_shift_norm"]
    options = {**out.get("network_options", {}), **network_options({key: getattr(args, f"clf_{key}", None) for key in keys})}
    if options:
        out["network_options"] = options
    return out


def run(args: argparse.Namespace) -> int:
    from .train import _launch_distributed, fit_from_args, prepare

    if prepare(args):
        return _launch_distributed(args)
    trainer, result = fit_from_args(args, classifier_overrides(args))
    if not trainer.dist.is_main:
        return 130 if result.interrupted else 0
    print(f"run folder: {result.run_dir}")
    print(f"classifier: {result.model_file}")
    print(f"guide:      difforge sample MODEL_FILE --classifier {result.model_file} --classifier-scale 1")
    return 130 if result.interrupted else 0
