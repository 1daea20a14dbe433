"""`difforge card MODEL_FILE`: a Hugging Face model card (README.md) beside the model file."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "card",
        help="write a Hugging Face model card (README.md) for a model file",
        description="Write README.md beside MODEL_FILE in the Hugging Face model-card format: YAML front matter "
        "(library_name, pipeline_tag, tags; the license is left for you to fill in), then the network, data, classes, "
        "training recipe, metrics and how to sample. Inside a run folder the run's config, metrics and log are used too.",
    )
    p.add_argument("model", metavar="MODEL_FILE", help="a .safetensors model file, e.g. runs/NAME/checkpoints/ema.safetensors")
    p.add_argument("--out", default=None, help="write the card here instead of README.md beside the model file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export.card import write_card

    path = write_card(args.model, args.out)
    print(f"model card: {path} (set the license in its front matter before uploading)")
    return 0
