"""Exclusive lock files, so that two processes never rewrite the same state at once."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int:
    """Create ``path`` if missing and lock it exclusively, without waiting.

    Returns the open file descriptor, which holds the lock until it is
    closed (or the process ends). Raises :class:`BlockingIOError` when
    another process holds the lock, and :class:`OSError` when the file
    cannot be opened. Symbolic links are not followed.
    """
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor
