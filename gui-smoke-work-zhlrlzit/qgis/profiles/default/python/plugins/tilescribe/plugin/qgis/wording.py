"""Small wording helpers for the dock's status line and messages."""

from __future__ import annotations

from typing import Optional


def count(n: int, word: str, plural: Optional[str] = None) -> str:
    """"1 result", "3 results", "0 indexes": the number and the noun in the right number."""
    return f"{n} {word if n == 1 else (plural or word + 's')}"
