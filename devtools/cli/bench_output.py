"""Printing a benchmark's result: indented text for people, JSON for the README and scripts."""

from __future__ import annotations

import json


def print_report(result: dict, fmt: str) -> None:
    print(json.dumps(result, indent=2) if fmt == "json" else _text(result))


def _text(result: dict, indent: str = "") -> str:
    lines = []
    for key, value in result.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(_text(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)
