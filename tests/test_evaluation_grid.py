"""The grid's bulk voting against the door's voting rule, and the grid's shape."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface.evaluation.grid import k_pairs, run_grid, threshold_range
from edgeface.evaluation.neighbours import Neighbours, predict, search, tabulate_votes
from edgeface.gallery import Gallery
from edgeface.voting import VotingParams, vote

NAMES = ["ana", "ben", "cy", "dee"]


def synthetic_neighbours(queries: int, seed: int) -> Neighbours:
    """Random neighbours on a coarse distance grid, so equal distances and vote ties are common."""
    rng = np.random.default_rng(seed)
    distances = np.full((queries, 10), np.inf, dtype=np.float32)
    labels = np.full((queries, 10), -1, dtype=np.int64)
    for query in range(queries):
        count = 10 if query % 7 else int(rng.integers(0, 10))  # some galleries smaller than k
        found = rng.choice(np.arange(0.40, 1.10, 0.05), size=count).astype(np.float32)
        people = rng.integers(0, len(NAMES), size=count)
        order = sorted(range(count), key=lambda j: (found[j], NAMES[people[j]]))
        distances[query, :count] = found[order]
        labels[query, :count] = people[order]
    winners, tied = tabulate_votes(labels, len(NAMES))
    return Neighbours(distances, labels, len(NAMES), winners, tied)


def door_answer(neighbours: Neighbours, query: int, params: VotingParams) -> int:
    valid = neighbours.labels[query] >= 0
    people = [NAMES[label] for label in neighbours.labels[query][valid]]
    match = vote(people, neighbours.distances[query][valid], params)
    return len(NAMES) if match.person is None else NAMES.index(match.person)


def test_bulk_voting_equals_vote_everywhere():
    neighbours = synthetic_neighbours(60, seed=1)
    thresholds = threshold_range(0.40, 1.10, 0.01)
    for k1, k2 in k_pairs():
        predicted = predict(neighbours, k1, k2, thresholds)
        for row, threshold in enumerate(thresholds):
            params = VotingParams(k1=k1, k2=k2, threshold=float(threshold))
            expected = [door_answer(neighbours, query, params) for query in range(60)]
            assert predicted[row].tolist() == expected, f"k1={k1} k2={k2} threshold={threshold}"


def test_tie_in_first_k1_extends_to_k2():
    # ana and ben tie 1-1 in the first two; ben has two more votes within k2.
    labels = np.array([[0, 1, 1, 1, 0, -1, -1, -1, -1, -1]])
    distances = np.array([[0.3, 0.31, 0.32, 0.33, 0.34] + [np.inf] * 5], dtype=np.float32)
    winners, tied = tabulate_votes(labels, 2)
    neighbours = Neighbours(distances, labels, 2, winners, tied)
    assert predict(neighbours, 2, 5, np.array([0.5]))[0].tolist() == [1]
    assert predict(neighbours, 2, 5, np.array([0.315]))[0].tolist() == [0]  # tie within 2, nearest wins
    assert predict(neighbours, 2, 5, np.array([0.2]))[0].tolist() == [2]  # nothing within: Unknown


def test_search_orders_like_vote_on_real_gallery():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(12, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gallery = Gallery(model_name="test", fingerprint="x", dim=8)
    gallery.replace_people({name: {f"{name}{i}.jpg": ("", vectors[3 * n + i]) for i in range(3)} for n, name in enumerate(NAMES)})
    queries = rng.normal(size=(20, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    queries[5] = np.nan  # a query without a face
    found = search(gallery, gallery.people, queries, 10)

    thresholds = threshold_range(0.8, 1.6, 0.05)
    for k1, k2 in [(1, 2), (2, 4), (3, 5), (4, 10)]:
        predicted = predict(found, k1, k2, thresholds)
        for row, threshold in enumerate(thresholds):
            params = VotingParams(k1=k1, k2=k2, threshold=float(threshold))
            for query in range(20):
                if query == 5:
                    assert predicted[row, query] == len(NAMES)
                    continue
                distances, people = gallery.search(queries[query : query + 1], k2)
                match = vote(people[0], distances[0], params)
                expected = len(NAMES) if match.person is None else gallery.people.index(match.person)
                assert predicted[row, query] == expected


def test_grid_has_45_pairs_and_51_thresholds():
    assert len(k_pairs()) == 45
    thresholds = threshold_range(0.50, 1.00, 0.01)
    assert len(thresholds) == 51
    assert thresholds[0] == 0.5
    assert thresholds[-1] == 1.0
    neighbours = synthetic_neighbours(10, seed=4)
    result = run_grid(neighbours, np.zeros(10, dtype=np.int64), thresholds)
    assert len(result.rows) == 45 * 51
    assert (result.rows[0]["k1"], result.rows[0]["k2"], result.rows[0]["threshold"]) == (1, 2, 0.5)
    assert max(row["f1"] for row in result.rows) == result.best["f1"]


def test_threshold_range_rejects_bad_bounds():
    with pytest.raises(ValueError):
        threshold_range(0.5, 2.5, 0.01)
    with pytest.raises(ValueError):
        threshold_range(0.5, 1.0, 0.0)
    assert threshold_range(0.2, 0.7, 0.01)[-1] == 0.7
