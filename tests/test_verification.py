"""LFW pair lists and the 10-fold verification protocol."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import LFW, require
from edgeface.errors import EdgefaceError
from edgeface.verification import best_threshold, read_pairs, tar_at_far, ten_fold_accuracy


def test_read_pairs_lfw_view2():
    pairs = read_pairs(require(LFW / "pairs.txt"))

    assert len(pairs) == 6000
    assert [same for _, _, same in pairs[:600]] == [True] * 300 + [False] * 300
    assert sum(same for _, _, same in pairs) == 3000
    assert pairs[0][0].name == "Abel_Pacheco_0001.jpg"
    assert pairs[0][1].name == "Abel_Pacheco_0004.jpg"
    assert all(first.is_file() and second.is_file() for first, second, _ in pairs)


def test_read_pairs_lfw_view1():
    pairs = read_pairs(require(LFW / "pairsDevTrain.txt"))
    assert len(pairs) == 2200
    assert all(same for _, _, same in pairs[:1100])
    assert not any(same for _, _, same in pairs[1100:])
    assert pairs[0][0].name == "Aaron_Peirsol_0001.jpg"
    assert pairs[0][1].name == "Aaron_Peirsol_0002.jpg"


def test_read_pairs_rejects_bad_line(tmp_path):
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("1 1\nAnn 1 2\nBob 1 Carl x\n", encoding="utf-8")

    with pytest.raises(EdgefaceError, match=r"pairs.txt:3: invalid pair line"):
        read_pairs(pairs_file)


def test_read_pairs_rejects_wrong_count(tmp_path):
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("1 2\nAnn 1 2\nBob 1 Carl 2\n", encoding="utf-8")

    with pytest.raises(EdgefaceError, match="declares 4 pairs"):
        read_pairs(pairs_file)


def test_ten_fold_separable_is_perfect():
    same = np.tile(np.repeat([True, False], 300), 10)
    distances = np.where(same, 0.3, 0.9)

    result = ten_fold_accuracy(distances, same)

    assert result["mean"] == 1.0
    assert result["std"] == 0.0
    assert all(0.3 <= threshold < 0.9 for threshold in result["thresholds"])
    assert result["tar_at_far"] == 1.0
    assert result["failures"] == 0


def test_ten_fold_counts_failures_wrong():
    same = np.tile(np.repeat([True, False], 300), 10)
    distances = np.where(same, 0.3, 0.9)
    distances[[0, 1, 2, 300, 301, 302]] = np.nan

    result = ten_fold_accuracy(distances, same)

    assert result["failures"] == 6
    assert result["accuracies"][0] == pytest.approx(594 / 600)
    assert result["accuracies"][1:] == [1.0] * 9
    assert result["mean_without_failures"] == 1.0
    assert result["tar_at_far"] == pytest.approx(2997 / 3000)
    assert result["far_measured"] == 0.0


def test_best_threshold_matches_exhaustive_search():
    rng = np.random.default_rng(7)
    same = rng.random(500) < 0.5
    distances = np.round(np.where(same, rng.normal(0.5, 0.15, 500), rng.normal(0.8, 0.15, 500)), 2)

    threshold = best_threshold(distances, same)

    def accuracy(t):
        return float((((distances <= t) & same) | ((distances > t) & ~same)).mean())

    candidates = np.concatenate([distances, distances - 0.005, [distances.min() - 1.0]])
    assert accuracy(threshold) == max(accuracy(t) for t in candidates)


def test_tar_at_far_allows_share_of_impostors():
    same = np.array([True] * 4 + [False] * 1000)
    impostors = np.linspace(0.5, 1.5, 1000)
    distances = np.concatenate([[0.1, 0.2, 0.502, 0.9], impostors])

    threshold, tar, far_measured = tar_at_far(distances, same, far=1e-3)

    # One impostor in 1,000 may be accepted: the smallest, at 0.5.
    assert impostors[0] <= threshold < impostors[1]
    assert far_measured == pytest.approx(1e-3)
    assert tar == pytest.approx(0.5)
