"""Evaluation metrics on small cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface.evaluation.metrics import band_table, class_report, confusion_matrix, score, score_many

A, B, UNKNOWN = 0, 1, 2


def test_counts_two_people():
    # Queries: A->A, A->A, A->Unknown, B->A, B->B.
    counts = score(np.array([A, A, A, B, B]), np.array([A, A, UNKNOWN, A, B]), people=2)
    assert counts.tp == 3
    assert counts.fp == 1  # B answered as A; Unknown is not a false positive
    assert counts.fn == 2  # the A answered Unknown and the B answered A
    assert counts.tn == 5 * 3 - 3 - 1 - 2
    assert counts.precision == pytest.approx(3 / 4)
    assert counts.recall == pytest.approx(3 / 5)


def test_weighted_f1_uses_support():
    # A: tp 2, fp 0, fn 1 -> F1 0.8 (support 3); B: tp 0, fp 1, fn 1 -> F1 0 (support 1).
    counts = score(np.array([A, A, A, B]), np.array([A, A, B, UNKNOWN]), people=2)
    assert counts.f1 == pytest.approx((3 * 0.8 + 1 * 0.0) / 4)
    assert counts.precision == pytest.approx(2 / 3)
    assert counts.recall == pytest.approx(2 / 4)


def test_all_unknown_scores_zero():
    counts = score(np.array([A, B]), np.array([UNKNOWN, UNKNOWN]), people=2)
    assert (counts.tp, counts.fp, counts.fn) == (0, 0, 2)
    assert counts.precision == 0.0
    assert counts.recall == 0.0
    assert counts.f1 == 0.0


def test_stranger_answered_unknown_is_correct():
    # A query of a person who is not enrolled has the true label Unknown.
    counts = score(np.array([A, UNKNOWN, UNKNOWN]), np.array([A, UNKNOWN, B]), people=2)
    assert counts.tp == 2
    assert counts.fp == 1
    assert counts.fn == 0


def test_score_many_matches_score_per_row():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 4, size=40)
    predicted = rng.integers(0, 5, size=(7, 40))
    many = score_many(true, predicted, people=4)
    for row in range(7):
        single = score(true, predicted[row], people=4)
        assert many["tp"][row] == single.tp
        assert many["fp"][row] == single.fp
        assert many["tn"][row] == single.tn
        assert many["fn"][row] == single.fn
        assert many["f1"][row] == pytest.approx(single.f1)


def test_weighted_f1_matches_hand_loop():
    rng = np.random.default_rng(5)
    true = rng.integers(0, 5, size=60)
    predicted = np.where(rng.random(60) < 0.6, true, rng.integers(0, 6, size=60))
    expected = 0.0
    for label in range(5):
        tp = np.sum((true == label) & (predicted == label))
        fp = np.sum((true != label) & (predicted == label))
        fn = np.sum((true == label) & (predicted != label))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        expected += f1 * np.sum(true == label)
    assert score(true, predicted, people=5).f1 == pytest.approx(expected / 60)


def test_class_report_rows():
    report = class_report(np.array([A, A, A, B]), np.array([A, A, B, UNKNOWN]), ["ana", "ben"])
    assert [row["class"] for row in report] == ["ana", "ben"]
    ana, ben = report
    assert ana["precision"] == pytest.approx(1.0)
    assert ana["recall"] == pytest.approx(2 / 3)
    assert ana["f1"] == pytest.approx(0.8)
    assert ana["support"] == 3
    assert ben["precision"] == 0.0
    assert ben["fp"] == 1
    assert ben["support"] == 1


def test_class_report_lists_unknown_with_support():
    report = class_report(np.array([A, UNKNOWN]), np.array([A, UNKNOWN]), ["ana", "ben"])
    assert [row["class"] for row in report] == ["ana", "Unknown"]


def test_bands_edges():
    report = [
        {"precision": 0.49, "recall": 0.5, "f1": 0.75},
        {"precision": 0.5, "recall": 0.74, "f1": 1.0},
        {"precision": 0.0, "recall": 0.75, "f1": 0.7499},
    ]
    bands = {row["band"]: row for row in band_table(report)}
    assert bands["0-49 %"]["precision"] == 2
    assert bands["50-74 %"]["precision"] == 1
    assert bands["50-74 %"]["recall"] == 2
    assert bands["75-100 %"]["recall"] == 1
    assert bands["75-100 %"]["f1"] == 2
    assert bands["50-74 %"]["f1"] == 1
    assert sum(row["f1"] for row in bands.values()) == 3


def test_confusion_matrix_rows_are_true_labels():
    matrix = confusion_matrix(np.array([A, A, A, B]), np.array([A, A, B, UNKNOWN]), people=2)
    assert matrix.tolist() == [[2, 1, 0], [0, 0, 1], [0, 0, 0]]
