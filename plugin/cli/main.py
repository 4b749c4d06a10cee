"""Entry point: builds the parser from the command modules and shows errors without tracebacks."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sqlite3
import sys

from ..core.errors import Cancelled, TileScribeError
from ..core.index.sqlite_errors import read_failure
from ..core.terminal_text import for_terminal

# Each module has `register(subparsers)`, which adds its parser with `func=run`.
COMMAND_MODULES = [
    "import_captions",
    "copy_command",
    "search_command",
    "info_command",
    "check_command",
    "eval_command",
    "index_command",
    "models_command",
]
# Benchmarks live in devtools/, beside plugin/ in a checkout and absent from the QGIS ZIP.
DEVTOOLS_COMMAND_MODULES = [
    "bench_search_command",
    "bench_index_command",
    "bench_caption_command",
]

EXIT_ERROR = 2
EXIT_CANCELLED = 130
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tilescribe",
        description="Find places in rasters by describing them (text-to-text retrieval).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    for module in devtools_command_modules():
        module.register(subparsers)
    return parser


def devtools_command_modules() -> list:
    """The bench commands when devtools/ is beside plugin/ (a checkout); none in an installed ZIP."""
    root = __package__.rsplit(".", 2)[0]  # tilescribe.plugin.cli -> tilescribe
    if importlib.util.find_spec(f"{root}.devtools") is None:
        return []
    return [importlib.import_module(f"{root}.devtools.cli.{name}") for name in DEVTOOLS_COMMAND_MODULES]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(for_terminal(f"tilescribe: cancelled: {exc}", keep="\n"), file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("tilescribe: interrupted; work committed so far is kept.", file=sys.stderr)
        return EXIT_CANCELLED
    except TileScribeError as exc:  # messages quote paths and text from files: escapes are shown, not obeyed
        print(for_terminal(f"tilescribe: error: {exc}", keep="\n"), file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return 0
    except sqlite3.DatabaseError as exc:
        failure = read_failure(getattr(args, "db", None), exc)
        if failure is None:
            return _internal_error(exc)
        print(for_terminal(f"tilescribe: error: {failure}", keep="\n"), file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a failure no message covers yet (a bug): one line, not a traceback
        return _internal_error(exc)


def _internal_error(exc: Exception) -> int:
    if os.environ.get("TILESCRIBE_DEBUG"):
        raise exc
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    text = for_terminal(text)
    print(f"tilescribe: internal error: {type(exc).__name__}: {text}. Work committed so far is kept. "
          "This is a bug in TileScribe: run the command again with TILESCRIBE_DEBUG=1 to see where "
          "it happened, and report it.", file=sys.stderr)
    return EXIT_INTERNAL
