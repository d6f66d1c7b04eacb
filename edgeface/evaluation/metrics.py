"""Identification metrics over enrolled people plus Unknown.

Labels are integers: ``0 .. people - 1`` for the enrolled people and
``people`` (:func:`unknown_label`) for Unknown. A query's true label is
Unknown when the person is not enrolled.

Counts are one-vs-rest per class, summed over classes:

- ``tp``: correct predictions (a query of a stranger answered Unknown is correct).
- ``fp``: predictions of a person that were wrong. A person's query answered
  Unknown is not an ``fp``; it is an ``fn``.
- ``fn``: queries of an enrolled person not answered with that person.
- ``tn``: the rest of the ``queries x classes`` one-vs-rest decisions,
  ``queries * (people + 1) - tp - fp - fn``.

Precision ``tp / (tp + fp)`` and recall ``tp / (tp + fn)`` are micro-averaged,
so a stricter threshold trades recall for precision. F1 is the mean of the
per-class F1 weighted by each class's support (its number of queries), as
scikit-learn's ``average="weighted"`` computes it. A ratio whose denominator
is 0 is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Performance bands of per-class scores: [low, high) in 0..1; the last one includes 1.
BANDS = (("0-49 %", 0.0, 0.5), ("50-74 %", 0.5, 0.75), ("75-100 %", 0.75, 1.01))


def unknown_label(people: int) -> int:
    """Return the integer label of Unknown when ``people`` people are enrolled."""
    return people


@dataclass(frozen=True)
class Counts:
    """Summed one-vs-rest counts and the scores of one set of predictions."""

    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def score_many(true: np.ndarray, predicted: np.ndarray, people: int) -> dict[str, np.ndarray]:
    """Return counts and scores for several prediction sets at once.

    :param true: ``(queries,)`` true labels.
    :param predicted: ``(sets, queries)`` predicted labels, one row per set
        (one grid combination, for example).
    Returns a dict of ``(sets,)`` arrays: ``tp``, ``fp``, ``tn``, ``fn``,
    ``precision``, ``recall``, ``f1``.
    """
    true = np.asarray(true, dtype=np.int64)
    predicted = np.atleast_2d(np.asarray(predicted, dtype=np.int64))
    sets, queries = predicted.shape
    classes = people + 1
    unknown = unknown_label(people)

    correct = predicted == true[None, :]
    tp = correct.sum(axis=1)
    fp = (~correct & (predicted != unknown)).sum(axis=1)
    fn = (~correct & (true[None, :] != unknown)).sum(axis=1)
    tn = queries * classes - tp - fp - fn

    # Per-class counts for the weighted F1, one bincount over all sets.
    offsets = (np.arange(sets) * classes)[:, None]
    tp_class = np.bincount((np.where(correct, predicted, 0) + offsets)[correct], minlength=sets * classes).reshape(sets, classes)
    predicted_class = np.bincount((predicted + offsets).ravel(), minlength=sets * classes).reshape(sets, classes)
    support = np.bincount(true, minlength=classes)
    fp_class = predicted_class - tp_class
    fn_class = support[None, :] - tp_class
    f1_class = _ratio(2 * tp_class, 2 * tp_class + fp_class + fn_class)
    f1 = _ratio((f1_class * support[None, :]).sum(axis=1), np.full(sets, support.sum()))

    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": f1,
    }


def score(true: np.ndarray, predicted: np.ndarray, people: int) -> Counts:
    """Return the summed counts and scores of one set of predictions."""
    result = score_many(true, np.asarray(predicted)[None, :], people)
    return Counts(**{key: (int(value[0]) if key in ("tp", "fp", "tn", "fn") else float(value[0])) for key, value in result.items()})


def class_report(true: np.ndarray, predicted: np.ndarray, names: list[str]) -> list[dict]:
    """Return one row per class with support: precision, recall, F1, support and counts.

    ``names`` are the enrolled people in label order. Unknown gets a row only
    when some query is of a person who is not enrolled.
    """
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    people = len(names)
    labels = list(range(people + 1))
    rows = []
    for label in labels:
        support = int((true == label).sum())
        if support == 0:
            continue
        tp = int(((true == label) & (predicted == label)).sum())
        fp = int(((true != label) & (predicted == label)).sum())
        fn = support - tp
        precision = float(_ratio(tp, tp + fp))
        recall = float(_ratio(tp, tp + fn))
        f1 = float(_ratio(2 * tp, 2 * tp + fp + fn))
        name = names[label] if label < people else "Unknown"
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support, "tp": tp, "fp": fp, "fn": fn})
    return rows


def band_table(report: list[dict]) -> list[dict]:
    """Return how many classes of a :func:`class_report` fall in each performance band.

    One row per band, with the class counts for ``precision``, ``recall``
    and ``f1``. A score of exactly 0.5 is in 50-74 %, and 0.75 in 75-100 %.
    """
    rows = []
    for name, low, high in BANDS:
        row = {"band": name}
        for metric in ("precision", "recall", "f1"):
            row[metric] = sum(1 for r in report if low <= r[metric] < high)
        rows.append(row)
    return rows


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, people: int) -> np.ndarray:
    """Return the ``(people + 1, people + 1)`` counts, rows true label, columns predicted; last is Unknown."""
    classes = people + 1
    flat = np.asarray(true, dtype=np.int64) * classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)
