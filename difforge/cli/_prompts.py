"""Text flags shared by `difforge sample` and `difforge train` (a helper module, not a command)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..pipeline.config import ANALOGY, PLACE_CONTRAST


def _strength(what: str):
    """A flag's parser for auto or a number (its range is checked by pipeline/text.py check_place_contrast / check_analogy)."""
    def parse(text: str):
        if text.strip().lower() == "auto":
            return "auto"
        try:
            return float(text)
        except ValueError:
            import argparse

            raise argparse.ArgumentTypeError(f"must be {what} or auto, got {text!r}") from None
    return parse


_contrast = _strength("a number >= 0 (0: off)")


def add_prompt_flags(p) -> None:
    g = p.add_argument_group("text (models trained with --text-encoder)")
    g.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="describe the images, e.g. \"a large diagonal scratch at the top left on brushed steel\"; "
                   "repeatable: --num images per prompt. A combination the captions never had can be composed from "
                   "parts joined by AND, each with an optional :weight (negative subtracts), e.g. \"a small at the top "
                   "AND crack AND on wood\"")
    g.add_argument("--prompts", dest="prompts_file", default=None, metavar="FILE", help="a UTF-8 file with one prompt per line")
    g.add_argument("--negative-prompt", "--negative_prompt", dest="negative_prompt", default=None, metavar="TEXT",
                   help="what guidance steers away from (default: the empty caption, the unconditional branch)")
    g.add_argument("--place-contrast", dest="place_contrast", type=_contrast, default="auto", metavar="A",
                   help="a prompt that names a place ('at the top left', 'in the centre', ...) is also steered away from the "
                   f"places beside it, with strength A (default auto = {PLACE_CONTRAST:g}; 0 turns it off; each neighbour costs one "
                   "more network row per step; README \"Text conditioning\")")
    g.add_argument("--analogy", dest="analogy", type=_strength("a number from 0 (off) to 1"), default="auto", metavar="S",
                   help="a prompt whose combination the captions never had (a crack on wood when every crack was on steel) "
                   "is composed from three they had: crack on steel + scratch on wood - scratch on steel; S is how much of "
                   f"its prediction comes from that (default auto = {ANALOGY:g}; 0 off; each of its up to 4 parallelograms is up to 3 network rows per step; "
                   "README \"Text conditioning\")")
    g.add_argument("--mode", default=None, choices=("text", "class", "uncond"),
                   help="IDDM: text needs --prompt/--prompts and a text model; class and uncond are what the model file decides")


def add_text_train_flags(g) -> None:
    g.add_argument("--text-encoder", "--text_encoder", dest="text_encoder", default=None, metavar="builtin|DIR",
                   help="condition on captions: builtin (a small encoder trained with the model) or a local CLIP folder "
                   "(pip install 'difforge[text]'; never downloaded)")
    g.add_argument("--caption-template", dest="caption_template", default=None, metavar="TEXT",
                   help="caption of images without metadata.jsonl/.csv or .txt captions, e.g. \"a photo of a {class} defect\"")


def prompt_kwargs(args) -> dict:
    """``prompt`` / ``negative_prompt`` / ``place_contrast`` / ``analogy`` for Pipeline.generate from --prompt,
    --prompts, --negative-prompt, --place-contrast and --analogy."""
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read --prompts {path} ({type(e).__name__}); give a UTF-8 text file, one prompt per line") from None
        prompts += [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise UserError(f"--prompts {path} holds no prompt; write one per line")
    if args.mode == "text" and not prompts:
        raise UserError("--mode text needs --prompt TEXT or --prompts FILE")
    out = {}
    if prompts:
        out["prompt"] = prompts
    if args.negative_prompt is not None:
        out["negative_prompt"] = args.negative_prompt
    for key in ("place_contrast", "analogy"):
        if getattr(args, key, "auto") != "auto":
            out[key] = getattr(args, key)
    return out
