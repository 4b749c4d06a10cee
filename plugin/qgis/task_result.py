"""What a task hands back to the GUI: its value, or the error that stopped it, and whether it was cancelled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class TaskResult:
    value: object = None
    error: Optional[Exception] = None
    cancelled: bool = False
