"""Progress from pip's own output: pip has no machine-readable progress, but its lines are stable.

"Collecting X" / "Requirement already satisfied: X" count packages resolved, "Downloading
X (12.3 MB)" and "Building wheel for X" say what is slow now, "Installing collected
packages: ..." starts the install, "Successfully installed ..." ends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

RESOLVE_SHARE = 0.6   # of a pip step: resolving and downloading
INSTALL_SHARE = 0.75  # installing starts here

_RESOLVED = re.compile(r"^\s*(Collecting|Requirement already satisfied:|Processing|Looking in|Obtaining)\s+(\S+)")
_DOWNLOAD = re.compile(r"^\s*Downloading\s+(\S+)\s*(\(([^)]*)\))?")
_BUILD = re.compile(r"^\s*(Building wheel for|Building wheels for collected packages:)\s*(.*)")
_INSTALLING = re.compile(r"^\s*Installing collected packages:\s*(.*)")
_DONE = re.compile(r"^\s*Successfully (installed|built)\s*(.*)")


@dataclass
class PipProgress:
    """Feed pip's lines; `fraction` (0..1) and `message` follow. `expected`: packages pip will
    likely resolve (a guess: the fraction never passes RESOLVE_SHARE before the install starts)."""

    expected: int = 10
    fraction: float = 0.0
    message: str = ""
    resolved: int = 0

    def feed(self, line: str) -> bool:
        """True when the line changed the progress or the message."""
        line = line.rstrip()
        match = _RESOLVED.match(line)
        if match and match.group(1) != "Looking in":
            self.resolved += 1
            self._advance(RESOLVE_SHARE * min(1.0, self.resolved / max(1, self.expected)))
            self.message = f"{match.group(1).rstrip(':')} {_short(match.group(2))}"
            return True
        match = _DOWNLOAD.match(line)
        if match:
            size = f" ({match.group(3)})" if match.group(3) else ""
            self.message = f"Downloading {_short(match.group(1))}{size}"
            return True
        match = _BUILD.match(line)
        if match:
            self.message = f"Building {match.group(2).split(',')[0].strip() or 'wheels'}"
            return True
        match = _INSTALLING.match(line)
        if match:
            count = len([name for name in match.group(1).split(",") if name.strip()])
            self._advance(INSTALL_SHARE)
            self.message = f"Installing {count} package{'s' if count != 1 else ''}"
            return True
        match = _DONE.match(line)
        if match and match.group(1) == "installed":
            self._advance(1.0)
            self.message = "Installed " + _short(match.group(2), 120)
            return True
        return False

    def _advance(self, fraction: float) -> None:
        self.fraction = max(self.fraction, min(1.0, fraction))  # never goes back


def _short(text: str, limit: int = 60) -> str:
    text = text.rsplit("/", 1)[-1]  # a URL or a path: its file name is enough
    return text if len(text) <= limit else text[:limit - 1] + "…"


_BUILD_STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]\s+(.*)")
_MAKE_STEP = re.compile(r"^\s*\[\s*(\d+)%\]\s+(.*)")  # make's "[ 45%] Building CXX object ..."


@dataclass
class BuildProgress:
    """A compile's progress from the build tool's "[12/345] Building CXX object ..." lines (ninja,
    which pip's build of llama-cpp-python uses and shows with -v) or "[ 45%] Building ..." lines
    (make, which llama-server's cmake build uses): real progress through the minutes it takes."""

    fraction: float = 0.0
    message: str = ""
    what: str = "llama.cpp"

    def feed(self, line: str) -> bool:
        match = _BUILD_STEP.match(line)
        if match and int(match.group(2)) > 0:
            done, total = int(match.group(1)), int(match.group(2))
            message = f"Compiling {self.what}: {done} of {total} build steps"
        else:
            match = _MAKE_STEP.match(line)
            if not match:
                return False
            done, total = int(match.group(1)), 100
            message = f"Compiling {self.what}: {done} %"
        if done / total < self.fraction:
            return False  # a line printed out of order: progress never goes back
        self.fraction = min(1.0, done / total)
        self.message = message
        return True


class StepProgress:
    """Overall progress over weighted steps: `report(fraction, message)` gets 0..100. A step's own
    messages come after its title: pip's "Requirement already satisfied: networkx" alone does not
    tell the user which step of the setup is running."""

    def __init__(self, weights: dict, report: Callable[[float, str], None]):
        total = float(sum(weights.values())) or 1.0
        self._weights = {name: weight / total for name, weight in weights.items()}
        self._done = 0.0
        self._current: Optional[str] = None
        self._title = ""
        self._report = report

    def start(self, name: str, message: str) -> None:
        self._current, self._title = name, message
        self._report(100.0 * self._done, message)

    def update(self, fraction: float, message: str) -> None:
        share = self._weights.get(self._current, 0.0)
        text = f"{self._title}: {message}" if self._title and message else message or self._title
        self._report(100.0 * (self._done + share * min(1.0, max(0.0, fraction))), text)

    def finish(self, message: str = "") -> None:
        self._done += self._weights.get(self._current, 0.0)
        self._current, self._title = None, ""
        self._report(100.0 * min(1.0, self._done), message)
