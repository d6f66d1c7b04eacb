"""Open set: enrolled people against strangers, the door's real question.

The split's enrolment images make the gallery. Genuine queries are the
split's query images; impostor queries are images of people who are not
enrolled. At each threshold, with the voting rule's ``k1`` and ``k2`` and no
safeguards:

- the false accept rate (FAR) is the share of impostor queries answered with
  any enrolled person;
- the false reject rate (FRR) is the share of genuine queries not answered
  with their own person (a wrong person or Unknown). Queries without a face
  are rejections.

A query is answered with a person exactly when its nearest neighbour is
within the threshold, so FAR grows with the threshold and the threshold at
a target FAR is exact: the largest one that accepts at most
``floor(target * impostors)`` impostor queries. It is reported only when
that count is at least 1, because with fewer impostors than ``1 / target``
the data cannot tell the target FAR from zero.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import EdgefaceError
from ..verification import tar_at_far
from . import neighbours as neighbour_search
from . import plots
from .context import Context
from .datasets import Split, impostor_images
from .identification import enrol_split
from .metrics import unknown_label
from .report import write_csv, write_run_record

FAR_TARGETS = (1e-3, 1e-4)


def float32_at_most(value: float) -> np.float32:
    """Return the largest float32 that is at most ``value``, as thresholds are compared in float32."""
    single = np.float32(value)
    if float(single) > value:
        single = np.nextafter(single, np.float32(-np.inf))
    return single


def threshold_at_far(nearest: np.ndarray, impostor: np.ndarray, target: float) -> float | None:
    """Return the largest threshold that accepts at most ``floor(target * impostors)`` impostor queries.

    ``nearest`` is each query's nearest-neighbour distance (float32, ``inf``
    for a query without a face, which is never accepted); ``impostor`` marks
    the impostor queries. Returns None when that count is 0, because the data
    then cannot tell ``target`` from zero. The threshold is a float32 value,
    as the voting rule compares distances in float32.
    """
    if math.floor(target * int(impostor.sum()) + 1e-9) < 1:
        return None
    distances = np.asarray(nearest, dtype=np.float64).copy()
    distances[np.isinf(distances)] = np.nan
    threshold, _, _ = tar_at_far(distances, ~impostor, target)
    return float(float32_at_most(min(threshold, 2.0)))


def rates(found: neighbour_search.Neighbours, true: np.ndarray, impostor: np.ndarray, k1: int, k2: int, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Return false accepts and rejects per threshold for one search of genuine and impostor queries.

    ``impostor`` marks the impostor rows of ``found``; the other rows are
    genuine queries with true labels ``true``.
    """
    predicted = neighbour_search.predict(found, k1, k2, thresholds)
    unknown = unknown_label(found.people)
    genuine = ~impostor
    accepted = (predicted[:, impostor] != unknown).sum(axis=1)
    right = ((predicted[:, genuine] == true[None, genuine]) & (true[None, genuine] != unknown)).sum(axis=1)
    impostors = int(impostor.sum())
    genuines = int(genuine.sum())
    return {
        "false_accepts": accepted,
        "false_rejects": genuines - right,
        "far": accepted / max(impostors, 1),
        "frr": (genuines - right) / max(genuines, 1),
    }


def run(context: Context, split: Split, data_dir: Path, max_impostors: int, seed: int, thresholds: np.ndarray, min_images: int) -> dict:
    """Measure FAR and FRR, write the results into ``context.out`` and return the summary."""
    matching = context.config["matching"]
    k1, k2 = matching["k1"], matching["k2"]
    if not 1 <= k1 < k2:
        raise EdgefaceError(f"invalid voting settings k1={k1} k2={k2}: need 1 <= k1 < k2")

    enrolled = enrol_split(context.embedding, split)
    in_split = {person for person, _ in split.enrol} | {person for person, _ in split.queries}
    strangers = impostor_images(data_dir, max_impostors, in_split, seed=seed, below=min_images)
    if not strangers:
        raise EdgefaceError(f"no impostor images: {data_dir} has no person with fewer than {min_images} images outside the split")
    stranger_vectors = context.embedding.embed([path for _, path in strangers], label="impostor images")

    queries = np.concatenate([enrolled.query_vectors, stranger_vectors.vectors])
    impostor = np.concatenate([np.zeros(len(enrolled.true), dtype=bool), np.ones(len(strangers), dtype=bool)])
    unknown = unknown_label(len(enrolled.names))
    true = np.concatenate([enrolled.true, np.full(len(strangers), unknown)])
    found = neighbour_search.search(enrolled.gallery, enrolled.names, queries, k2)
    curve = rates(found, true, impostor, k1, k2, thresholds)

    points = {"configured": _point(found, true, impostor, k1, k2, float(matching["threshold"]))}
    for target in FAR_TARGETS:
        threshold = threshold_at_far(found.distances[:, 0], impostor, target)
        points[f"far_{target:g}"] = None if threshold is None else _point(found, true, impostor, k1, k2, threshold)

    summary = {
        "k1": k1,
        "k2": k2,
        "people": len(enrolled.names),
        "genuine_queries": int((~impostor).sum()),
        "impostor_queries": int(impostor.sum()),
        "impostor_seed": seed,
        "failed_detections": len(enrolled.enrol_failures) + len(enrolled.query_failures) + len(stranger_vectors.failed),
        "operating_points": points,
    }
    _write(context, split, thresholds, curve, summary, strangers, stranger_vectors.failed, enrolled)
    return summary


def _point(found, true, impostor, k1: int, k2: int, threshold: float) -> dict:
    figures = rates(found, true, impostor, k1, k2, np.array([threshold]))
    return {
        "threshold": threshold,
        "far": float(figures["far"][0]),
        "frr": float(figures["frr"][0]),
        "false_accepts": int(figures["false_accepts"][0]),
        "false_rejects": int(figures["false_rejects"][0]),
    }


def _write(context: Context, split: Split, thresholds, curve, summary, strangers, stranger_failures, enrolled) -> None:
    out = context.out
    rows = [
        {"threshold": float(t), "far": float(curve["far"][i]), "frr": float(curve["frr"][i]), "false_accepts": int(curve["false_accepts"][i]), "false_rejects": int(curve["false_rejects"][i])}
        for i, t in enumerate(thresholds)
    ]
    write_csv(out / "openset_rates.csv", rows, ("threshold", "far", "frr", "false_accepts", "false_rejects"))
    points = [{"point": name, **value} for name, value in summary["operating_points"].items() if value is not None]
    write_csv(out / "operating_points.csv", points, ("point", "threshold", "far", "frr", "false_accepts", "false_rejects"))
    write_csv(out / "impostors.csv", [{"person": p, "image": str(path)} for p, path in strangers], ("person", "image"))
    failures = [
        {"image": str(p), "role": role, "reason": r}
        for role, items in (("enrol", enrolled.enrol_failures), ("genuine", enrolled.query_failures), ("impostor", stranger_failures))
        for p, r in items
    ]
    write_csv(out / "failed_images.csv", failures, ("image", "role", "reason"))
    files = ["openset_rates.csv", "operating_points.csv", "impostors.csv", "failed_images.csv"]
    if context.draw:
        marks = {f"{name} (threshold {value['threshold']:.3f})": (value["far"], value["frr"]) for name, value in summary["operating_points"].items() if value is not None}
        title = f"k1={summary['k1']} k2={summary['k2']}, {summary['people']} people, {summary['impostor_queries']} impostor images\n{context.model_label()}"
        plots.det(curve["far"], curve["frr"], marks, out / "det.png", f"DET: {title}")
        plots.rates(thresholds, curve["far"], curve["frr"], out / "rates.png", f"FAR and FRR: {title}")
        files += ["det.png", "rates.png"]
    write_run_record(context, "openset", {"split": split.description, **summary, "files": files})


def format_summary(summary: dict) -> str:
    """Return the lines printed by ``edgeface eval openset``."""
    lines = [
        f"open set: {summary['people']} people enrolled, {summary['genuine_queries']} genuine and "
        f"{summary['impostor_queries']} impostor queries, k1={summary['k1']} k2={summary['k2']}, "
        f"{summary['failed_detections']} images without a face"
    ]
    for name, point in summary["operating_points"].items():
        if point is None:
            target = float(name.split("_", 1)[1])
            lines.append(f"{name}: not measurable, needs at least {math.ceil(1 / target)} impostor queries")
            continue
        lines.append(
            f"{name}: threshold {point['threshold']:.4f}, FAR {100 * point['far']:.3f} % ({point['false_accepts']}), "
            f"FRR {100 * point['frr']:.2f} % ({point['false_rejects']})"
        )
    return "\n".join(lines)
