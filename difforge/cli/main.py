"""`difforge` command: dispatch to one module per sub-command and turn user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ..version import __version__
from ..errors import UserError

# Modules of difforge.cli that are not sub-commands; every other module defines
# add_parser(subparsers) (registering one or more commands) and the run function it binds.
NOT_COMMANDS = {"main", "aliases", "seedtools"}
# commands first in --help, in this order; the rest follow alphabetically
FIRST = ["demo", "train", "sample", "data", "info"]


def command_modules() -> List[str]:
    import pkgutil

    from . import __path__ as cli_path

    names = [m.name for m in pkgutil.iter_modules(cli_path) if m.name not in NOT_COMMANDS and not m.name.startswith("_")]
    return sorted(names, key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="difforge",
        description="Train diffusion models on your own image folder and generate new images.",
        epilog="Run `difforge COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"difforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in command_modules():
        importlib.import_module(f"{__package__}.{module}").add_parser(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    """Parse ``argv``; an unknown flag is reported by the sub-command's parser (its usage, not the
    top-level one) with a "did you mean" for near-misses among that command's flags."""
    import difflib

    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    sub = _subparser(parser, args.command)
    flags = [s for a in sub._actions for s in a.option_strings]
    hints = []
    for token in extra:
        name = token.split("=", 1)[0]
        close = difflib.get_close_matches(name, flags, n=3, cutoff=0.75) if name.startswith("-") else []
        if close:
            hints.append(f"{name}: did you mean {' or '.join(close)}?")
    message = f"unrecognized arguments: {' '.join(extra)}"
    sub.error(message + "".join("\n" + h for h in hints))


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(parser, argv)
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"difforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"difforge {args.command}: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\ndifforge {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
