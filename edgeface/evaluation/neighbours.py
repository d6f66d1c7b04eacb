"""Nearest gallery neighbours of each query, and the voting rule applied to them in bulk.

Every query is searched once with the largest ``k2`` (10 for the grid), and
each ``(k1, k2, threshold)`` is then evaluated from those neighbours by
:func:`predict`. It computes what :func:`edgeface.voting.vote` returns for the
same neighbours without the safeguards (``min_votes=1``, ``margin=0``),
including the rule's handling of a tie among the first ``k1`` candidates.
``tests/test_evaluation_grid.py`` checks the two against each other on every
grid combination.

The argument: the neighbours are sorted by distance and then by name, so for
a threshold ``t`` the neighbours within it are the first ``m`` of the ``k2``.
The candidates are the first ``c = min(k1, m)``, and when they tie the first
``m`` vote instead. The winner of the first ``n`` neighbours, and whether
their top count is tied, depend on ``n`` alone, so they are tabulated once
per query for ``n = 1 .. k`` and every combination is a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..gallery import Gallery
from .metrics import unknown_label


@dataclass
class Neighbours:
    """The ``k`` nearest enrolled vectors of each query, sorted by distance then name.

    ``distances`` is ``(queries, k)`` float32 in Euclidean units (0..2),
    ``inf`` where there is no neighbour (a query without a face, or a
    gallery with fewer than ``k`` vectors). ``labels`` contains the person label
    of each neighbour, ``-1`` where there is none. ``winners[:, n]`` is the
    voting winner among the first ``n`` neighbours (``n = 1 .. k``; column 0
    is Unknown) and ``tied[:, n]`` whether their top vote count is shared.
    """

    distances: np.ndarray
    labels: np.ndarray
    people: int
    winners: np.ndarray
    tied: np.ndarray

    @property
    def k(self) -> int:
        return self.distances.shape[1]


def search(gallery: Gallery, names: list[str], queries: np.ndarray, k: int) -> Neighbours:
    """Search each query row in ``gallery`` and tabulate the votes of its neighbours.

    ``names`` are the enrolled people in label order. Query rows that are
    NaN (no face) get no neighbours.
    """
    label_of = {name: label for label, name in enumerate(names)}
    count = len(queries)
    distances = np.full((count, k), np.inf, dtype=np.float32)
    labels = np.full((count, k), -1, dtype=np.int64)

    valid = np.flatnonzero(~np.isnan(queries[:, 0])) if count else np.zeros(0, dtype=np.int64)
    if len(valid) and len(gallery):
        found, people = gallery.search(queries[valid], k)
        for row, query in enumerate(valid):
            # The voting rule's order: distance, then person name.
            order = sorted(range(found.shape[1]), key=lambda j: (found[row, j], people[row][j]))
            distances[query, : len(order)] = found[row, order]
            labels[query, : len(order)] = [label_of[people[row][j]] for j in order]

    winners, tied = tabulate_votes(labels, len(names))
    return Neighbours(distances, labels, len(names), winners, tied)


def tabulate_votes(labels: np.ndarray, people: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the winner and the tie flag of the first ``n`` neighbours, for ``n = 0 .. k``.

    The winner has the most votes. Among tied people it is the one met first
    in the sorted list, which is the one with the smallest single distance.
    """
    count, k = labels.shape
    unknown = unknown_label(people)
    winners = np.full((count, k + 1), unknown, dtype=np.int64)
    tied = np.zeros((count, k + 1), dtype=bool)
    for query in range(count):
        votes: dict[int, int] = {}
        for n in range(1, k + 1):
            label = int(labels[query, n - 1])
            if label < 0:
                winners[query, n:] = winners[query, n - 1]
                tied[query, n:] = tied[query, n - 1]
                break
            votes[label] = votes.get(label, 0) + 1
            top = max(votes.values())
            leaders = [int(p) for p in labels[query, :n] if votes[int(p)] == top]
            winners[query, n] = leaders[0]
            tied[query, n] = len(set(leaders)) > 1
    return winners, tied


def predict(neighbours: Neighbours, k1: int, k2: int, thresholds: np.ndarray) -> np.ndarray:
    """Return the voting rule's labels, ``(len(thresholds), queries)``, for one ``(k1, k2)``.

    Thresholds are compared in float32, as the voting rule compares the
    float32 distances that :meth:`Gallery.search` returns.
    """
    if not 1 <= k1 < k2 <= neighbours.k:
        raise ValueError(f"need 1 <= k1 < k2 <= {neighbours.k}, got k1={k1} k2={k2}")
    thresholds = np.asarray(thresholds, dtype=np.float32)
    within = (neighbours.distances[None, :, :k2] <= thresholds[:, None, None]).sum(axis=2)
    candidates = np.minimum(within, k1)

    rows = np.arange(neighbours.distances.shape[0])[None, :]
    first = neighbours.winners[rows, candidates]
    extended = neighbours.winners[rows, within]
    return np.where(neighbours.tied[rows, candidates], extended, first)
