"""The access decision: when a tracked face opens the door.

Following ``docs/recognition.md`` (section 3 of the specification), a track
is granted when one person won at least ``min_frames`` of its last
``window_frames`` judged frames within ``window_seconds``, and no other
enrolled person won any frame of that window. A single frame never opens
the door. On top of that rule:

- the grant happens only in a frame with at most ``max_faces`` faces good
  enough to judge, so a stranger cannot walk in beside an enrolled person;
- the person must be enabled and inside their schedule;
- no grant within ``cooldown_seconds`` of the previous one (the person
  just granted, seen again as a new track in that time, is not reported
  again).

Each track produces each kind of outcome at most once, so a person who
stays in front of the camera is one event in the log, not one per frame.
Granted and refused-by-policy tracks are decided, and the daemon stops
embedding them.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from .tracking import Track
from .voting import Match

#: ``policy(person, when)`` returns ``(True, "")`` or ``(False, reason)``.
Policy = Callable[[str, datetime], tuple[bool, str]]


@dataclass(frozen=True)
class DecisionParams:
    min_frames: int = 3
    window_frames: int = 5
    window_seconds: float = 2.0
    max_faces: int = 1
    cooldown_seconds: float = 5.0

    @classmethod
    def from_config(cls, config: dict) -> DecisionParams:
        decision = config["decision"]
        return cls(
            min_frames=decision["min_frames"],
            window_frames=decision["window_frames"],
            window_seconds=decision["window_seconds"],
            max_faces=decision["max_faces"],
            cooldown_seconds=config["door"]["cooldown_seconds"],
        )


@dataclass(frozen=True)
class Outcome:
    """One access decision for one track.

    ``reason`` is ``granted``, ``unknown`` (a full window with nobody
    recognised), ``conflict`` (two people won frames of one window),
    ``several_faces``, ``cooldown``, or the policy's reason (``disabled``,
    ``schedule``). ``votes`` counts the frames the person won, ``frames`` the
    frames in the window, and ``distance`` is the person's best distance in
    the window (for unknown, the nearest neighbour's).
    """

    track: int
    person: str | None
    granted: bool
    reason: str
    votes: int
    frames: int
    distance: float | None
    time: float

    def as_event(self) -> dict:
        return {
            "person": self.person,
            "granted": self.granted,
            "reason": self.reason,
            "votes": self.votes,
            "frames": self.frames,
            "distance": None if self.distance is None else round(float(self.distance), 4),
            "track": self.track,
        }


def _always_allowed(person: str, when: datetime) -> tuple[bool, str]:
    return True, ""


class AccessDecider:
    """Turns per-frame matches of tracked faces into access decisions."""

    def __init__(self, params: DecisionParams, policy: Policy = _always_allowed) -> None:
        self.params = params
        self.policy = policy
        self.last_grant: float | None = None
        self.last_person: str | None = None

    @staticmethod
    def decided(track: Track) -> bool:
        """True when the track needs no more frames judged."""
        return bool(track.state.get("decided"))

    def observe(self, track: Track, match: Match, now: float, faces_in_frame: int, when: datetime | None = None) -> Outcome | None:
        """Add one frame's match for ``track`` and return a new decision, if any.

        :param now: the frame's time in seconds (the source's clock).
        :param faces_in_frame: faces in this frame good enough to judge.
        :param when: local wall-clock time for schedules; default now.
        """
        p = self.params
        window: deque = track.state.setdefault("window", deque())
        track.state.setdefault("reported", set())
        window.append((now, match.person, match.distance))
        while len(window) > p.window_frames or (window and now - window[0][0] > p.window_seconds):
            window.popleft()

        winners = Counter(person for _, person, _ in window if person is not None)
        if not winners:
            if len(window) == p.window_frames:
                distances = [d for _, _, d in window if d is not None]
                return self._once(track, "unknown", None, False, 0, len(window), min(distances) if distances else None, now)
            return None

        person, votes = winners.most_common(1)[0]
        best = min(d for _, who, d in window if who == person)
        if votes < p.min_frames:
            return None
        if len(winners) > 1:
            return self._once(track, "conflict", person, False, votes, len(window), best, now)
        if faces_in_frame > p.max_faces:
            return self._once(track, "several_faces", person, False, votes, len(window), best, now)
        allowed, reason = self.policy(person, when or datetime.now())
        if not allowed:
            track.state["decided"] = True
            return self._once(track, reason or "refused", person, False, votes, len(window), best, now)
        if self.last_grant is not None and now - self.last_grant < p.cooldown_seconds:
            if person == self.last_person:
                # The person just let in, seen again as a new track: nothing to decide.
                track.state["decided"] = True
                return None
            return self._once(track, "cooldown", person, False, votes, len(window), best, now)
        self.last_grant = now
        self.last_person = person
        track.state["decided"] = True
        return Outcome(track.id, person, True, "granted", votes, len(window), best, now)

    @staticmethod
    def _once(track: Track, reason: str, person: str | None, granted: bool, votes: int, frames: int, distance: float | None, now: float) -> Outcome | None:
        reported: set = track.state["reported"]
        key = (reason, person)
        if key in reported:
            return None
        reported.add(key)
        return Outcome(track.id, person, granted, reason, votes, frames, distance, now)
