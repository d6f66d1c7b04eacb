"""Closed-set identification over a grid of ``k1``, ``k2`` and threshold.

Every query is searched once for its 10 nearest enrolled vectors, and each
of the 45 ``(k1, k2)`` pairs (``1 <= k1 < k2 <= 10``) at each threshold is
scored from those neighbours with :func:`.neighbours.predict`, the voting
rule of the door without its two safeguards. The default thresholds are
0.50 to 1.00 in steps of 0.01, Euclidean distance between unit vectors.

The best row has the highest weighted F1. Ties go to the higher precision,
then the higher recall, then the first row in file order (smallest ``k1``,
``k2`` and threshold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .metrics import score_many
from .neighbours import Neighbours, predict
from .report import write_csv, write_run_record

COLUMNS = ("k1", "k2", "threshold", "precision", "recall", "f1", "tp", "fp", "tn", "fn")
MAX_K = 10


def k_pairs(max_k: int = MAX_K) -> list[tuple[int, int]]:
    """Return every ``(k1, k2)`` with ``1 <= k1 < k2 <= max_k``, sorted."""
    return [(k1, k2) for k1 in range(1, max_k) for k2 in range(k1 + 1, max_k + 1)]


def threshold_range(start: float, stop: float, step: float) -> np.ndarray:
    """Return thresholds from ``start`` to ``stop`` inclusive, rounded to 6 decimals.

    Raises ValueError unless ``0 < start <= stop <= 2`` and ``step > 0``.
    """
    if not (0.0 < start <= stop <= 2.0) or step <= 0:
        raise ValueError(f"thresholds need 0 < start <= stop <= 2 and step > 0, got {start}:{stop}:{step}")
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    return np.round(start + step * np.arange(count), 6)


@dataclass
class GridResult:
    """All rows of the grid, the best one, and its predictions."""

    rows: list[dict]
    best: dict
    best_predicted: np.ndarray
    report: list[dict] = field(default_factory=list)
    bands: list[dict] = field(default_factory=list)
    enrolled: object = None


def run_grid(neighbours: Neighbours, true: np.ndarray, thresholds: np.ndarray, max_k: int = MAX_K) -> GridResult:
    """Score every ``(k1, k2, threshold)`` from one search; rows ordered by k1, k2, threshold."""
    rows = []
    best_key = None
    best_row = None
    best_predicted = None
    for k1, k2 in k_pairs(max_k):
        predicted = predict(neighbours, k1, k2, thresholds)
        scores = score_many(true, predicted, neighbours.people)
        for i, threshold in enumerate(thresholds):
            row = {"k1": k1, "k2": k2, "threshold": float(threshold)}
            for key in ("precision", "recall", "f1"):
                row[key] = float(scores[key][i])
            for key in ("tp", "fp", "tn", "fn"):
                row[key] = int(scores[key][i])
            rows.append(row)

            key = (row["f1"], row["precision"], row["recall"])
            if best_key is None or key > best_key:
                best_key, best_row, best_predicted = key, row, predicted[i]
    return GridResult(rows, best_row, best_predicted)


def curve_rows(result: GridResult, k1: int, k2: int) -> list[dict]:
    """Return the rows of one ``(k1, k2)`` pair, ordered by threshold."""
    return [row for row in result.rows if row["k1"] == k1 and row["k2"] == k2]


def run(context, split, thresholds: np.ndarray) -> GridResult:
    """Run the grid on a split, write every output into ``context.out`` and return the result."""
    from . import neighbours as neighbour_search
    from .identification import enrol_split
    from .metrics import band_table, class_report, confusion_matrix

    enrolled = enrol_split(context.embedding, split)
    found = neighbour_search.search(enrolled.gallery, enrolled.names, enrolled.query_vectors, MAX_K)
    result = run_grid(found, enrolled.true, thresholds)

    out = context.out
    write_csv(out / "grid_search_results.csv", result.rows, COLUMNS)
    write_csv(out / "best_row.csv", [result.best], COLUMNS)
    report = class_report(enrolled.true, result.best_predicted, enrolled.names)
    write_csv(out / "class_report.csv", report, ("class", "precision", "recall", "f1", "support", "tp", "fp", "fn"))
    bands = band_table(report)
    write_csv(out / "performance_bands.csv", bands, ("band", "precision", "recall", "f1"))
    matrix = confusion_matrix(enrolled.true, result.best_predicted, len(enrolled.names))
    labels = [*enrolled.names, "Unknown"]
    write_csv(
        out / "confusion_matrix.csv",
        [{"true": labels[i], **{labels[j]: int(matrix[i, j]) for j in range(len(labels))}} for i in range(len(labels))],
        ("true", *labels),
    )
    failures = [{"image": str(p), "role": role, "reason": r} for role, items in (("enrol", enrolled.enrol_failures), ("query", enrolled.query_failures)) for p, r in items]
    write_csv(out / "failed_images.csv", failures, ("image", "role", "reason"))

    files = ["grid_search_results.csv", "best_row.csv", "class_report.csv", "performance_bands.csv", "confusion_matrix.csv", "failed_images.csv"]
    if context.draw:
        files += _draw(context, result, matrix, labels)
    write_run_record(
        context,
        "grid",
        {
            "split": split.description,
            "people": len(enrolled.names),
            "enrol_images": len(split.enrol),
            "query_images": len(split.queries),
            "enrol_failures": len(enrolled.enrol_failures),
            "query_failures": len(enrolled.query_failures),
            "thresholds": [float(thresholds[0]), float(thresholds[-1]), len(thresholds)],
            "best": result.best,
            "files": files,
        },
    )
    result.report = report
    result.bands = bands
    result.enrolled = enrolled
    return result


def _draw(context, result: GridResult, matrix: np.ndarray, labels: list[str]) -> list[str]:
    from . import plots

    best = result.best
    title = context.model_label()
    plots.confusion_matrix(
        matrix, labels, context.out / "confusion_matrix.png",
        f"Confusion matrix, k1={best['k1']} k2={best['k2']} threshold={best['threshold']:.2f}\n{title}",
    )
    pairs = {(best["k1"], best["k2"]), (1, 2), (3, 5)}
    precision_recall = {}
    roc = {}
    for k1, k2 in sorted(pairs):
        rows = curve_rows(result, k1, k2)
        label = f"k1={k1} k2={k2}"
        precision_recall[label] = (np.array([r["recall"] for r in rows]), np.array([r["precision"] for r in rows]))
        false_rate = np.array([r["fp"] / max(r["fp"] + r["tn"], 1) for r in rows])
        roc[label] = (false_rate, np.array([r["recall"] for r in rows]))
    plots.precision_recall(precision_recall, (best["recall"], best["precision"]), context.out / "precision_recall.png", f"Precision-recall over the threshold\n{title}")
    plots.roc(roc, context.out / "roc.png", f"ROC over the threshold\n{title}", "false positive rate fp / (fp + tn)", "true positive rate (micro recall)")
    return ["confusion_matrix.png", "precision_recall.png", "roc.png"]
