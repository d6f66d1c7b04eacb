"""LFW View 2 verification through the evaluated pipeline.

Every image of the pair list is embedded once (cached), each pair's distance
is the Euclidean distance between its two unit vectors, and
:func:`edgeface.verification.ten_fold_accuracy` gives the 10-fold accuracy
(each fold's threshold tuned on the other nine) and TAR at FAR 0.1 % over all
pairs. A pair with an image where no face is found counts as wrong in the
accuracy and is never accepted in TAR.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import EdgefaceError
from ..verification import read_pairs, ten_fold_accuracy
from . import plots
from .context import Context
from .report import write_csv, write_run_record

log = logging.getLogger(__name__)

FAR_TARGET = 1e-3


def pair_distances(pairs: list[tuple[Path, Path, bool]], context: Context) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Return one distance per pair (NaN where an image failed) and the failed images."""
    images = sorted({path for first, second, _ in pairs for path in (first, second)})
    embedded = context.embedding.embed(images, label="LFW images")
    row_of = {path: row for row, path in enumerate(images)}
    first = embedded.vectors[[row_of[a] for a, _, _ in pairs]]
    second = embedded.vectors[[row_of[b] for _, b, _ in pairs]]
    return np.linalg.norm(first - second, axis=1), embedded.failed


def run(context: Context, data_dir: Path, pairs_file: Path | None, folds: int = 10) -> dict:
    """Measure LFW verification, write the results into ``context.out`` and return the summary."""
    pairs_path = pairs_file if pairs_file is not None else data_dir / "pairs.txt"
    if not pairs_path.is_file():
        raise EdgefaceError(f"pairs file not found: {pairs_path} (give the LFW folder that holds pairs.txt and images/, or --pairs FILE)")
    header = pairs_path.read_text(encoding="utf-8").split("\n", 1)[0].split()
    if len(header) != 2:
        raise EdgefaceError(
            f"{pairs_path} has no 'folds pairs_per_half' header, so it is not a View 2 pair list "
            f"(View 1's files have one fold): give LFW's pairs.txt"
        )
    pairs = read_pairs(pairs_path, data_dir / "images")
    missing = sorted({str(p) for a, b, _ in pairs for p in (a, b) if not p.is_file()})
    if missing:
        raise EdgefaceError(f"{len(missing)} images of {pairs_path} are missing, first {missing[0]}: check that {data_dir / 'images'} is LFW's image folder")
    if len(pairs) % folds:
        raise EdgefaceError(f"{pairs_path} has {len(pairs)} pairs, which do not split into {folds} folds: use View 2's pairs.txt")

    distances, failed = pair_distances(pairs, context)
    same = np.array([s for _, _, s in pairs])
    figures = ten_fold_accuracy(distances, same, folds=folds, far=FAR_TARGET)
    summary = {
        "accuracy_mean": figures["mean"],
        "accuracy_std": figures["std"],
        "tar_at_far_1e-3": figures["tar_at_far"],
        "threshold_mean": float(np.mean(figures["thresholds"])),
        "pairs": len(pairs),
        "failed_detections": len(failed),
        "failed_pairs": figures["failures"],
        "accuracy_mean_without_failed_pairs": figures["mean_without_failures"],
        "threshold_at_far_1e-3": figures["far_threshold"],
        "far_measured": figures["far_measured"],
    }
    _write(context, pairs_path, figures, summary, distances, same, failed)
    return summary


def _write(context: Context, pairs_path: Path, figures: dict, summary: dict, distances, same, failed) -> None:
    out = context.out
    write_csv(
        out / "lfw_folds.csv",
        [{"fold": i + 1, "threshold": t, "accuracy": a} for i, (t, a) in enumerate(zip(figures["thresholds"], figures["accuracies"]))],
        ("fold", "threshold", "accuracy"),
    )
    (out / "lfw_results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_csv(out / "failed_images.csv", [{"image": str(p), "reason": r} for p, r in failed], ("image", "reason"))
    files = ["lfw_folds.csv", "lfw_results.json", "failed_images.csv"]
    if context.draw:
        false_rate, true_rate = roc_points(distances, same)
        plots.roc(
            {context.pipeline.model_name: (false_rate, true_rate)},
            out / "lfw_roc.png",
            f"LFW View 2 ROC: {context.model_label()}",
            "false accept rate (different-person pairs accepted)",
            "true accept rate (same-person pairs accepted)",
            log_x=True,
        )
        files.append("lfw_roc.png")
    write_run_record(context, "lfw", {"pairs_file": str(pairs_path), "files": files, **summary})


def roc_points(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return false and true accept rates at every distinct pair distance; failed pairs are never accepted."""
    valid = ~np.isnan(distances)
    order = np.argsort(distances[valid], kind="stable")
    labels = same[valid][order]
    true_rate = np.cumsum(labels) / max(int(same.sum()), 1)
    false_rate = np.cumsum(~labels) / max(int((~same).sum()), 1)
    return false_rate, true_rate


def format_summary(summary: dict) -> str:
    """Return the summary as the lines printed by ``edgeface eval lfw``."""
    return (
        f"LFW verification, {summary['pairs']} pairs: accuracy {100 * summary['accuracy_mean']:.2f} % "
        f"± {100 * summary['accuracy_std']:.2f} (10 folds, mean threshold {summary['threshold_mean']:.3f})\n"
        f"TAR at FAR 0.1 %: {100 * summary['tar_at_far_1e-3']:.2f} % (threshold {summary['threshold_at_far_1e-3']:.3f})\n"
        f"images without a face: {summary['failed_detections']} ({summary['failed_pairs']} pairs counted as wrong; "
        f"accuracy without them {100 * summary['accuracy_mean_without_failed_pairs']:.2f} %)"
    )
