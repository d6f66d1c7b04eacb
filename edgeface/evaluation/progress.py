"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Count of items done out of a total, redrawn at most ten times a second.

    Nothing is written unless ``stream`` is a TTY, so logs and CI output stay
    clean. Call :meth:`advance` per item and :meth:`close` at the end.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total > 0 and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._start = time.monotonic()
        self._drawn_at = 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self._drawn_at >= 0.1 or self.done >= self.total):
            self._drawn_at = now
            self._draw(now)

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        width = 30
        share = min(self.done / self.total, 1.0)
        filled = int(share * width)
        elapsed = now - self._start
        remaining = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {self.done}/{self.total} "
            f"{elapsed:.0f} s elapsed, about {remaining:.0f} s left "
        )
        self.stream.flush()
