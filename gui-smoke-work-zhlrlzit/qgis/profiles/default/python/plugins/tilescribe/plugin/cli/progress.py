"""A one-line progress bar on stderr: tiles done/total, rate, time left."""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    """Redraws at most a few times a second; plain lines when stderr is not a terminal."""

    def __init__(self, stream=None, min_interval: float = 0.25):
        # sys.stderr read now, not at import: it may have been replaced since (tests, QGIS).
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.min_interval = min_interval if self.tty else 5.0
        self._last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        final = p.finished >= p.total
        if not final and now - self._last < self.min_interval:
            return
        self._last = now
        width = 24
        filled = int(width * p.finished / p.total) if p.total else width
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {p.finished}/{p.total} tiles "
                f"({p.done} captioned, {p.skipped} skipped, {p.failed} failed) "
                f"{p.tiles_per_s:.2f} tiles/s, {format_duration(p.eta_s)} left")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
