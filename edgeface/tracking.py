"""Follow faces from frame to frame by the overlap of their boxes.

A track is one face seen in consecutive processed frames. The access
decision counts votes per track, so two people passing the camera never add
up to one grant, and a track that is already decided costs no more
embedding.

Matching is greedy by intersection-over-union: each face joins the free
track it overlaps most, if the overlap reaches ``min_iou``; other faces
start new tracks. Tracks not seen for ``timeout`` seconds are dropped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from .detection import Face


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Return the intersection-over-union of two ``(x, y, width, height)`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    width = min(ax + aw, bx + bw) - max(ax, bx)
    height = min(ay + ah, by + bh) - max(ay, by)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (aw * ah + bw * bh - inter)


@dataclass
class Track:
    """One face followed across frames."""

    id: int
    box: tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    #: Free for the decision logic: votes, whether the track is decided, and so on.
    state: dict[str, Any] = field(default_factory=dict)


class Tracker:
    """Assigns the faces of each frame to tracks."""

    def __init__(self, min_iou: float = 0.3, timeout: float = 1.5) -> None:
        self.min_iou = min_iou
        self.timeout = timeout
        self.tracks: dict[int, Track] = {}
        self._ids = itertools.count(1)

    def update(self, faces: list[Face], now: float) -> list[Track]:
        """Return one track per face, in the order of ``faces``; drop tracks gone longer than ``timeout``."""
        for track_id in [t.id for t in self.tracks.values() if now - t.last_seen > self.timeout]:
            del self.tracks[track_id]

        pairs = sorted(
            ((iou(face.box, track.box), i, track.id) for i, face in enumerate(faces) for track in self.tracks.values()),
            reverse=True,
        )
        assigned: dict[int, Track] = {}
        taken: set[int] = set()
        for overlap, i, track_id in pairs:
            if overlap < self.min_iou:
                break
            if i in assigned or track_id in taken:
                continue
            assigned[i] = self.tracks[track_id]
            taken.add(track_id)

        result = []
        for i, face in enumerate(faces):
            track = assigned.get(i)
            if track is None:
                track = Track(id=next(self._ids), box=face.box, first_seen=now, last_seen=now)
                self.tracks[track.id] = track
            track.box = face.box
            track.last_seen = now
            result.append(track)
        return result

    def clear(self) -> None:
        """Forget every track (after a camera fault, say)."""
        self.tracks.clear()
