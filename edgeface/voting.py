"""The k1/k2/threshold voting rule that names the person behind an embedding.

Distances are plain Euclidean distances between unit vectors (0..2). Given the
``k2`` nearest gallery vectors of a query, sorted by distance:

1. The candidates are the first ``k1`` neighbours within ``threshold``.
2. When those candidates tie between two or more people, the candidates
   become all ``k2`` neighbours within ``threshold``. The neighbours within
   ``threshold`` always come first in the sorted list, so a fallback that
   fired only when none of the first ``k1`` qualify could never find one.
   A tie is the case where more neighbours can still decide.
3. No candidate: Unknown. Otherwise each candidate is one vote for its
   person, the most votes win, and a tie goes to the tied person with the
   smallest single distance, so the result never depends on enrolment order.
4. Two optional safeguards for the door: fewer than ``min_votes`` votes is
   Unknown, and so is a runner-up whose best distance is within ``margin``
   of the winner's.

The runner-up is the nearest person among all ``k2`` neighbours other than
the winner. For Unknown it is the best guess, to show how close the query
came: the would-be winner when a safeguard rejected it, otherwise the nearest
person.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class VotingParams:
    """Parameters of the voting rule; distances in Euclidean units (0..2)."""

    k1: int = 3
    k2: int = 5
    threshold: float = 0.6
    min_votes: int = 1
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.k1 < 1:
            raise ValueError(f"k1 must be at least 1, got {self.k1}")
        if self.k2 <= self.k1:
            raise ValueError(f"k2 must be greater than k1, got k1={self.k1} k2={self.k2}")
        if not 0.0 < self.threshold <= 2.0:
            raise ValueError(f"threshold must be in (0, 2], got {self.threshold}")
        if self.min_votes < 1:
            raise ValueError(f"min_votes must be at least 1, got {self.min_votes}")
        if not 0.0 <= self.margin < 2.0:
            raise ValueError(f"margin must be in [0, 2), got {self.margin}")


@dataclass(frozen=True)
class Match:
    """The result of the vote for one face.

    ``person`` is None for Unknown. ``distance`` is the winner's best
    distance, or for Unknown the nearest neighbour's (None when the gallery
    is empty). ``reason`` names why a face is Unknown: ``no-neighbours``,
    ``over-threshold``, ``too-few-votes`` or ``ambiguous``.
    """

    person: str | None
    votes: int
    distance: float | None
    runner_up: str | None
    runner_up_distance: float | None
    reason: str = ""

    @property
    def known(self) -> bool:
        return self.person is not None


def vote(people: Sequence[str], distances: Sequence[float], params: VotingParams) -> Match:
    """Apply the voting rule to the neighbours of one query.

    :param people: the person of each neighbour.
    :param distances: the Euclidean distance of each neighbour, in the same
        order. Neighbours need not be sorted; they are sorted here by distance
        and then by name, and only the first ``params.k2`` are used.
    """
    neighbours = sorted(zip(distances, people), key=lambda pair: (pair[0], pair[1]))[: params.k2]
    if not neighbours:
        return Match(None, 0, None, None, None, reason="no-neighbours")

    best_of: dict[str, float] = {}
    for distance, person in neighbours:
        best_of.setdefault(person, float(distance))

    within = [(d, p) for d, p in neighbours if d <= params.threshold]
    candidates = within[: params.k1]
    if not candidates:
        nearest_distance, nearest_person = neighbours[0]
        return Match(None, 0, float(nearest_distance), nearest_person, float(nearest_distance), reason="over-threshold")

    winner, votes, tied = _count(candidates)
    if tied:
        winner, votes, _ = _count(within)

    runner_up, runner_up_distance = _runner_up(best_of, winner)
    distance = best_of[winner]

    if votes < params.min_votes:
        return Match(None, votes, distance, winner, distance, reason="too-few-votes")
    if params.margin > 0 and runner_up_distance is not None and runner_up_distance - distance < params.margin:
        return Match(None, votes, distance, winner, distance, reason="ambiguous")
    return Match(winner, votes, distance, runner_up, runner_up_distance)


def _count(candidates: list[tuple[float, str]]) -> tuple[str, int, bool]:
    """Return the winner, its votes, and whether the top vote count was tied.

    Candidates are sorted by distance, so the first tied person met is the
    one with the smallest single distance.
    """
    counts: dict[str, int] = {}
    for _, person in candidates:
        counts[person] = counts.get(person, 0) + 1
    top = max(counts.values())
    leaders = [person for _, person in candidates if counts[person] == top]
    winner = leaders[0]
    tied = len(set(leaders)) > 1
    return winner, top, tied


def _runner_up(best_of: dict[str, float], winner: str) -> tuple[str | None, float | None]:
    others = [(d, p) for p, d in best_of.items() if p != winner]
    if not others:
        return None, None
    distance, person = min(others)
    return person, distance
