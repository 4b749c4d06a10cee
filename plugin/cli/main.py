"""Entry point: builds the parser from the command modules and shows errors without tracebacks."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..core.errors import Cancelled, TileScribeError

# Each module has `register(subparsers)`, which adds its parser with `func=run`.
COMMAND_MODULES = [
    "import_captions",
    "search_command",
    "info_command",
    "eval_command",
    "index_command",
]

EXIT_ERROR = 2
EXIT_CANCELLED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tilescribe",
        description="Find places in rasters by describing them (text-to-text retrieval).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"tilescribe: cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("tilescribe: interrupted; work committed so far is kept.", file=sys.stderr)
        return EXIT_CANCELLED
    except TileScribeError as exc:
        print(f"tilescribe: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return 0
