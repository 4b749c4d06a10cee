"""Options and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_db_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--db", required=required, help="index file (*.tilescribe.sqlite)")


def add_embedder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embedder", default=None, metavar="FOLDER",
        help="local sentence-transformers model folder (default: all-MiniLM-L6-v2, bundled)",
    )


def load_embedder(folder):
    from ..core.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(folder)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value})")
    return value


def say(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays machine-readable (escapes shown, not obeyed)."""
    from ..core.terminal_text import for_terminal

    print(for_terminal(message, keep="\n"), file=sys.stderr, flush=True)


def index_writable(db: Path) -> bool:
    """Whether the index (and its folder, for the -wal and -shm files) can be written."""
    return not db.is_file() or (os.access(db, os.W_OK) and os.access(db.resolve().parent, os.W_OK))
