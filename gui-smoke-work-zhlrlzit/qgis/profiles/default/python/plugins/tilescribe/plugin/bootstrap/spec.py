"""What the worker environment needs: one description shared with scripts/setup.sh.

requirements.txt holds the pip pins; environment.env (KEY=value, sourced by setup.sh)
holds torch's and llama-cpp-python's versions and where their builds come from.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

PLUGIN_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = "requirements.txt"
DESCRIPTION = "environment.env"
REQUIRED_KEYS = ("TORCH_VERSION", "LLAMA_VERSION", "RASTERIO_REQUIREMENT", "LLAMA_WHEEL_INDEX",
                 "TORCH_CPU_INDEX", "TORCH_CUDA_INDEX")


class SpecError(ValueError):
    """The description files are missing or malformed (a broken plugin install)."""


@dataclass(frozen=True)
class EnvironmentSpec:
    requirements: tuple          # pip requirement lines of requirements.txt, in order
    requirements_file: Path
    torch_version: str
    llama_version: str
    rasterio_requirement: str
    llama_wheel_index: str
    torch_cpu_index: str
    torch_cuda_index: str
    fingerprint: str             # changes when any pin changes: a remembered env is then outdated

    @property
    def torch_requirement(self) -> str:
        return f"torch=={self.torch_version}"

    @property
    def llama_requirement(self) -> str:
        return f"llama-cpp-python=={self.llama_version}"


def parse_description(text: str, source: str = DESCRIPTION) -> dict:
    """KEY=value lines (shell syntax, as setup.sh sources them); comments and blanks ignored."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key.isidentifier():
            raise SpecError(f"{source}, line {number}: expected KEY=value, got {line!r}.")
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise SpecError(f"{source}, line {number}: {exc}.") from None
        values[key] = " ".join(words)
    missing = [key for key in REQUIRED_KEYS if not values.get(key)]
    if missing:
        raise SpecError(f"{source} lacks {', '.join(missing)}: reinstall the plugin.")
    return values


def parse_requirements(text: str) -> tuple:
    """Requirement lines; `-r`/`-c` and other options are for pip alone and not allowed here."""
    lines = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise SpecError(f"{REQUIREMENTS}: options such as {line!r} do not belong in the worker's pins.")
        lines.append(line)
    return tuple(lines)


def load_spec(root: Optional[Path] = None) -> EnvironmentSpec:
    root = Path(root or PLUGIN_ROOT)
    texts = {}
    for name in (REQUIREMENTS, DESCRIPTION):
        try:
            texts[name] = (root / name).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"Cannot read {root / name} ({exc.strerror}): reinstall the plugin.") from None
    values = parse_description(texts[DESCRIPTION], str(root / DESCRIPTION))
    digest = hashlib.sha256((texts[REQUIREMENTS] + "\0" + texts[DESCRIPTION]).encode("utf-8")).hexdigest()
    return EnvironmentSpec(
        parse_requirements(texts[REQUIREMENTS]), root / REQUIREMENTS, values["TORCH_VERSION"],
        values["LLAMA_VERSION"], values["RASTERIO_REQUIREMENT"], values["LLAMA_WHEEL_INDEX"].rstrip("/"),
        values["TORCH_CPU_INDEX"], values["TORCH_CUDA_INDEX"], digest[:16])

