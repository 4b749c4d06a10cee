"""The CLI reference (docs/cli.md) documents every command and option the parser has, and no other."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tilescribe.plugin.cli.main import build_parser

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
HEADING = re.compile(r"^(#{2,3}) `tilescribe ([a-z][a-z -]*)`\s*$", re.MULTILINE)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command path ("index", "models", "models list") with its parser."""
    found = {}
    for name, sub in _subcommands(parser).items():
        path = f"{prefix} {name}".strip()
        found[path] = sub
        found.update(_commands(sub, path))
    return found


def _sections() -> dict[str, str]:
    """Each `tilescribe ...` heading's text, up to the next heading of its level or above."""
    text = REFERENCE.read_text(encoding="utf-8")
    headings = list(HEADING.finditer(text))
    sections = {}
    for i, match in enumerate(headings):
        level = len(match.group(1))
        end = len(text)
        for later in headings[i + 1 :]:
            if len(later.group(1)) <= level:
                end = later.start()
                break
        sections[match.group(2).strip()] = text[match.end() : end]
    return sections


def _documented_names(action: argparse.Action) -> list[str]:
    if action.option_strings:
        return list(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    return [metavar if isinstance(metavar, str) else " ".join(metavar)]


COMMANDS = _commands(build_parser())


def test_every_command_has_a_section():
    assert sorted(set(COMMANDS) - set(_sections())) == []


def test_every_section_is_a_command():
    assert sorted(set(_sections()) - set(COMMANDS)) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_documented_in_its_commands_section(command):
    section = _sections().get(command, "")
    missing = [
        name
        for action in COMMANDS[command]._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        for name in _documented_names(action)
        if f"`{name}`" not in section
    ]
    assert missing == [], f"docs/cli.md, section `tilescribe {command}`, does not mention {missing}"
