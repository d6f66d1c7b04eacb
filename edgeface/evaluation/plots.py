"""PNG plots of evaluation results, drawn with matplotlib (the ``plots`` extra).

matplotlib is imported only when a plot is drawn, with the Agg backend, so
the rest of the evaluation runs without it. :func:`available` reports whether
it is installed.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


def available() -> bool:
    """Return whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fixed creation date and no software tag keep the bytes reproducible.
    figure.savefig(path, dpi=150, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(figure)
    return path


def confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: Path, title: str) -> Path:
    """Draw a confusion matrix (rows true, columns predicted) as a heat map.

    The figure grows with the number of classes, about 0.12 inch per class
    and at least 6 inches, and labels shrink to 4 points past 60 classes, so
    every name stays legible at 150 dpi with 150 or more people.
    """
    pyplot = _pyplot()
    classes = len(names)
    side = max(6.0, 0.12 * classes + 2.0)
    font = 8
    if classes > 60:
        font = 4
    elif classes > 30:
        font = 6
    figure, axes = pyplot.subplots(figsize=(side, side))

    # Row-normalised colours, so people with many queries do not dominate,
    # on a power scale so that one wrong answer in 20 still shows.
    from matplotlib.colors import PowerNorm

    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    image = axes.imshow(shares, cmap="Blues", norm=PowerNorm(0.4, vmin=0.0, vmax=1.0), interpolation="nearest")
    axes.set_xticks(range(classes), labels=names, rotation=90, fontsize=font)
    axes.set_yticks(range(classes), labels=names, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    if classes <= 30:
        for row in range(classes):
            for column in range(classes):
                if matrix[row, column]:
                    colour = "white" if shares[row, column] > 0.5 else "black"
                    axes.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=font, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.03, label="share of the true class's queries")
    return _save(figure, path)


def precision_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], best: tuple[float, float], path: Path, title: str) -> Path:
    """Draw precision against recall, one line per label, with the best row marked."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(6, 5))
    for label, (recall, precision) in curves.items():
        axes.plot(recall, precision, marker=".", markersize=3, label=label)
    axes.plot([best[0]], [best[1]], "r*", markersize=12, label="best row")
    axes.set_xlabel("recall (micro)")
    axes.set_ylabel("precision (micro)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str, xlabel: str, ylabel: str, log_x: bool = False) -> Path:
    """Draw true positive rate against false positive rate, one line per label."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(6, 5))
    for label, (false_rate, true_rate) in curves.items():
        axes.plot(false_rate, true_rate, label=label)
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def det(far: np.ndarray, frr: np.ndarray, points: dict[str, tuple[float, float]], path: Path, title: str) -> Path:
    """Draw the DET curve, false reject rate against false accept rate on log axes."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(6, 5))
    floor = 1e-5
    axes.plot(np.maximum(far, floor), np.maximum(frr, floor), label="voting rule")
    for label, (x, y) in points.items():
        axes.plot([max(x, floor)], [max(y, floor)], "o", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"false accept rate (values below {floor:g} drawn at {floor:g})")
    axes.set_ylabel("false reject rate")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def rates(thresholds: np.ndarray, far: np.ndarray, frr: np.ndarray, path: Path, title: str) -> Path:
    """Draw false accept and false reject rates against the threshold."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(6, 4))
    axes.plot(thresholds, far, label="false accept rate")
    axes.plot(thresholds, frr, label="false reject rate")
    axes.set_xlabel("threshold (Euclidean distance between unit vectors)")
    axes.set_ylabel("rate")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def lines(x: Sequence[float], series: dict[str, Sequence[float]], path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    """Draw one line per series against ``x``, with markers."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for label, values in series.items():
        axes.plot(x, values, marker="o", label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)
