"""A file of per-image results keyed by image content hash, for one model and detector.

Each cache file maps the sha256 of an image file's bytes to either a row of
float32 values (a face box with landmarks, or an embedding) or the reason the
image failed (no face found, unreadable file). Failures are cached too, so a
second run reports them without trying those images again.

The file is an ``.npz`` written to a temporary name and renamed over the old
one, so an interrupted save leaves the previous file. A file that cannot be
read, or whose arrays do not fit together, is logged and ignored: the run
starts from an empty cache and overwrites it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_key(settings: dict) -> str:
    """Return a short stable hash of JSON-serialisable settings, for a cache file name."""
    text = json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ResultCache:
    """Rows of ``width`` float32 values, or failure reasons, keyed by image sha256.

    :param path: the ``.npz`` file; it is read now if it exists and written
        by :meth:`save`.
    :param width: values per row. A file with another width is ignored as
        stale.
    """

    def __init__(self, path: str | os.PathLike[str], width: int) -> None:
        self.path = Path(path)
        self.width = width
        self.rows: dict[str, np.ndarray] = {}
        self.failures: dict[str, str] = {}
        self.unsaved = 0
        self._load()

    def __len__(self) -> int:
        return len(self.rows) + len(self.failures)

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self.rows or sha256 in self.failures

    def get(self, sha256: str) -> tuple[np.ndarray | None, str]:
        """Return ``(row, "")`` for a cached result, ``(None, reason)`` for a cached failure.

        Raises KeyError when the image is not cached.
        """
        if sha256 in self.rows:
            return self.rows[sha256], ""
        return None, self.failures[sha256]

    def put(self, sha256: str, row: np.ndarray | None, reason: str = "") -> None:
        """Store a result row, or with ``row=None`` a failure and its reason."""
        if row is None:
            self.rows.pop(sha256, None)
            self.failures[sha256] = reason or "failed"
        else:
            row = np.asarray(row, dtype=np.float32).reshape(self.width)
            self.failures.pop(sha256, None)
            self.rows[sha256] = row
        self.unsaved += 1

    def save(self) -> None:
        """Write the cache atomically; does nothing when nothing changed since the last save."""
        if not self.unsaved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        hashes = sorted(self.rows)
        failed = sorted(self.failures)
        rows = np.stack([self.rows[h] for h in hashes]) if hashes else np.zeros((0, self.width), dtype=np.float32)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                version=np.array(CACHE_VERSION),
                hashes=np.array(hashes, dtype="U64"),
                rows=rows,
                failed=np.array(failed, dtype="U64"),
                reasons=np.array([self.failures[h] for h in failed], dtype=str),
            )
        os.replace(temporary, self.path)
        self.unsaved = 0

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            with np.load(self.path, allow_pickle=False) as data:
                version = int(data["version"])
                hashes = [str(h) for h in data["hashes"]]
                rows = np.asarray(data["rows"], dtype=np.float32)
                failed = [str(h) for h in data["failed"]]
                reasons = [str(r) for r in data["reasons"]]
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as error:
            log.warning("cache %s is unreadable (%s: %s): ignoring it and rebuilding", self.path, type(error).__name__, error)
            return

        consistent = (
            version == CACHE_VERSION
            and rows.ndim == 2
            and rows.shape == (len(hashes), self.width)
            and len(failed) == len(reasons)
            and bool(np.all(np.isfinite(rows)))
        )
        if not consistent:
            log.warning("cache %s does not match this run (version, width or values): ignoring it and rebuilding", self.path)
            return
        self.rows = dict(zip(hashes, rows))
        self.failures = dict(zip(failed, reasons))
