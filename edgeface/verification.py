"""Face verification on LFW View 2: reading the pair list and 10-fold accuracy.

LFW's ``pairs.txt`` lists 6,000 image pairs in 10 folds of 600 (300 pairs of
the same person, then 300 of different people, per fold). The protocol picks
a distance threshold on nine folds, measures accuracy on the tenth, and
reports the mean and standard deviation over the ten folds. A pair counts as
the same person when its distance is at most the threshold, the matching
rule of the gallery.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EdgefaceError


def read_pairs(
    path: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Path, Path, bool]]:
    """Read LFW's ``pairs.txt`` into ``(image_a, image_b, same)`` tuples in file order.

    The first line is ``folds pairs_per_half`` (View 2), or a lone
    ``pairs_per_half`` for one fold (View 1's files). Each fold has that many
    ``name n1 n2`` lines (same person) followed by as many
    ``name1 n1 name2 n2`` lines (different people). ``n`` is the image
    number, so ``George_W_Bush 10`` is ``George_W_Bush/George_W_Bush_0010.jpg``
    under ``images_dir`` (default: the ``images`` folder beside the pairs file).

    Raises :class:`EdgefaceError` naming the line when the file is malformed
    or its pair count does not match the first line.
    """
    path = Path(path)
    images = Path(images_dir) if images_dir is not None else path.parent / "images"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EdgefaceError(f"cannot read pairs file {path}: {error}") from error
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise EdgefaceError(f"pairs file {path} is empty")

    # View 2 starts with "folds pairs_per_half"; View 1's files with one count.
    header = lines[0].split()
    if len(header) not in (1, 2) or not all(field.isdigit() for field in header):
        raise EdgefaceError(f"{path}:1: expected 'folds pairs_per_half' or 'pairs_per_half', found {lines[0]!r}")
    folds, per_half = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    expected = folds * 2 * per_half
    if len(lines) - 1 != expected:
        raise EdgefaceError(f"{path}: the first line declares {expected} pairs, but the file has {len(lines) - 1}")

    pairs = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        try:
            if len(fields) == 3:
                name, first, second = fields
                pairs.append((_image_path(images, name, first), _image_path(images, name, second), True))
            elif len(fields) == 4:
                name_a, first, name_b, second = fields
                pairs.append((_image_path(images, name_a, first), _image_path(images, name_b, second), False))
            else:
                raise ValueError(f"expected 3 or 4 fields, found {len(fields)}")
        except ValueError as error:
            raise EdgefaceError(f"{path}:{number}: invalid pair line {line!r}: {error}") from error

        # Within a fold the same-person half comes first.
        position = (number - 2) % (2 * per_half)
        expected_same = position < per_half
        if pairs[-1][2] != expected_same:
            kind = "same-person" if expected_same else "different-person"
            raise EdgefaceError(f"{path}:{number}: expected a {kind} pair, because each fold lists {per_half} same-person pairs first")
    return pairs


def _image_path(images: Path, name: str, number: str) -> Path:
    return images / name / f"{name}_{int(number):04d}.jpg"


def ten_fold_accuracy(
    distances: np.ndarray, same: np.ndarray, folds: int = 10, far: float = 1e-3
) -> dict[str, Any]:
    """Return LFW's 10-fold verification accuracy and TAR at a fixed FAR.

    ``distances`` and ``same`` have one entry per pair in file order, so fold
    ``k`` is the ``k``-th contiguous block. A NaN distance is a pair whose
    embedding failed (no face found, for example). It counts as wrong in
    every accuracy, and as rejected (never accepted) in TAR and FAR.

    For each fold, the threshold is the one that maximises accuracy on the
    other folds (the smallest such threshold when several tie), and the
    fold's accuracy is measured with it. TAR at ``far`` uses all pairs: the
    threshold is the largest at which at most ``far`` of the different-person
    pairs are accepted.

    Returns a dict with ``mean`` and ``std`` (ddof 0) of the fold
    accuracies, ``accuracies``, ``thresholds`` (one per fold), ``tar_at_far``,
    ``far_threshold``, ``far`` (the target), ``far_measured`` and
    ``failures`` (NaN pairs). ``mean_without_failures`` and
    ``std_without_failures`` are the same statistics over only the pairs with
    a distance, at the same thresholds.
    """
    distances = np.asarray(distances, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if distances.shape != same.shape or distances.ndim != 1:
        raise ValueError(f"distances {distances.shape} and same {same.shape} must be 1-D arrays of one length")
    if len(distances) % folds != 0:
        raise ValueError(f"{len(distances)} pairs do not split into {folds} equal folds")

    fold_of_pair = np.repeat(np.arange(folds), len(distances) // folds)
    accuracies = []
    accuracies_without_failures = []
    thresholds = []
    for fold in range(folds):
        train = fold_of_pair != fold
        threshold = best_threshold(distances[train], same[train])
        test = ~train
        completed = test & ~np.isnan(distances)
        accuracies.append(_accuracy(distances[test], same[test], threshold))
        accuracies_without_failures.append(_accuracy(distances[completed], same[completed], threshold))
        thresholds.append(threshold)

    far_threshold, tar, far_measured = tar_at_far(distances, same, far)
    return {
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies)),
        "accuracies": [float(a) for a in accuracies],
        "thresholds": [float(t) for t in thresholds],
        "tar_at_far": tar,
        "far_threshold": far_threshold,
        "far": far,
        "far_measured": far_measured,
        "failures": int(np.isnan(distances).sum()),
        "mean_without_failures": float(np.mean(accuracies_without_failures)),
        "std_without_failures": float(np.std(accuracies_without_failures)),
    }


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """Return the distance threshold with the highest accuracy on these pairs.

    Candidates lie halfway between consecutive distinct distances, plus one
    just below the smallest (nothing accepted) and the largest (everything
    accepted). NaN pairs are wrong at every threshold, so they do not move it.
    """
    valid = ~np.isnan(distances)
    order = np.argsort(distances[valid], kind="stable")
    values = distances[valid][order]
    labels = same[valid][order]
    if len(values) == 0:
        raise ValueError("no pair has a distance: every embedding failed")

    # correct[i]: pairs classified right when the i smallest distances are accepted.
    same_accepted = np.concatenate([[0], np.cumsum(labels)])
    different_accepted = np.concatenate([[0], np.cumsum(~labels)])
    correct = same_accepted + (different_accepted[-1] - different_accepted)

    # A split between two equal distances is not a threshold.
    splittable = np.concatenate([[True], values[1:] > values[:-1], [True]])
    correct = np.where(splittable, correct, -1)
    split = int(np.argmax(correct))

    if split == 0:
        return float(np.nextafter(values[0], -np.inf))
    if split == len(values):
        return float(values[-1])
    return float((values[split - 1] + values[split]) / 2.0)


def _accuracy(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    if len(distances) == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):
        accepted = distances <= threshold
    rejected = distances > threshold
    correct = (accepted & same) | (rejected & ~same)
    return float(correct.mean())


def tar_at_far(distances: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float, float]:
    """Return ``(threshold, TAR, measured FAR)`` at the largest threshold whose FAR is at most ``far``.

    FAR is the share of different-person pairs with a distance at most the
    threshold, TAR the share of same-person pairs. NaN pairs are never
    accepted but stay in both denominators.
    """
    different = np.sort(distances[~same & ~np.isnan(distances)])
    allowed = int(np.floor(far * int((~same).sum()) + 1e-9))
    if allowed >= len(different):
        threshold = float(different[-1]) if len(different) else float("inf")
    else:
        # Accept everything below the (allowed + 1)-th smallest impostor distance.
        threshold = float(np.nextafter(different[allowed], -np.inf))

    with np.errstate(invalid="ignore"):
        accepted = distances <= threshold
    tar = float((accepted & same).sum() / max(int(same.sum()), 1))
    measured = float((accepted & ~same).sum() / max(int((~same).sum()), 1))
    return threshold, tar, measured
