"""Scalability: gallery load time and accuracy against the number of enrolled people.

For each size ``n``, the first ``n`` people of the split by sorted name are
enrolled. The load time is the wall time from image files to a searchable
gallery: reading, detecting, embedding and indexing every enrolment image,
with the cache bypassed so that it measures the pipeline. Query images come
from the cache. Precision, recall and F1 (see :mod:`.metrics`) use the
configured ``k1``, ``k2`` and threshold.

Load times depend on the machine and on what else runs on it; every other
figure is reproducible.
"""

from __future__ import annotations

import time

import numpy as np

from . import neighbours as neighbour_search
from . import plots
from .context import Context
from .datasets import Split
from .identification import build_gallery, label_queries
from .metrics import score
from .report import write_csv, write_run_record

COLUMNS = ("people", "enrol_images", "enrol_failures", "queries", "load_seconds", "ms_per_image", "precision", "recall", "f1", "tp", "fp", "tn", "fn")
PRINTED = ("people", "enrol_images", "queries", "load_seconds", "ms_per_image", "precision", "recall", "f1")


def run(context: Context, split: Split, sizes: list[int]) -> list[dict]:
    """Measure every gallery size, write the results into ``context.out`` and return one row per size."""
    matching = context.config["matching"]
    k1, k2, threshold = matching["k1"], matching["k2"], matching["threshold"]
    everyone = split.people
    sizes = sorted({min(size, len(everyone)) for size in sizes})

    # Queries of all sizes come from one cached pass over the largest split.
    largest = split.only(set(everyone[: sizes[-1]]))
    queries = context.embedding.embed([path for _, path in largest.queries], label="query images")
    row_of = {path: row for row, (_, path) in enumerate(largest.queries)}

    rows = []
    for size in sizes:
        part = split.only(set(everyone[:size]))
        start = time.perf_counter()
        enrol_vectors = context.embedding.embed_uncached([path for _, path in part.enrol])
        gallery = build_gallery(context.embedding, part.enrol, enrol_vectors)
        seconds = time.perf_counter() - start

        subset = queries.take([row_of[path] for _, path in part.queries])
        enrolled = label_queries(gallery, part.queries, subset, enrol_vectors.failed)
        found = neighbour_search.search(gallery, enrolled.names, enrolled.query_vectors, k2)
        predicted = neighbour_search.predict(found, k1, k2, np.array([threshold]))[0]
        counts = score(enrolled.true, predicted, len(enrolled.names))
        rows.append(
            {
                "people": size,
                "enrol_images": len(part.enrol),
                "enrol_failures": len(enrol_vectors.failed),
                "queries": len(part.queries),
                "load_seconds": seconds,
                "ms_per_image": 1000.0 * seconds / max(len(part.enrol), 1),
                "precision": counts.precision,
                "recall": counts.recall,
                "f1": counts.f1,
                "tp": counts.tp,
                "fp": counts.fp,
                "tn": counts.tn,
                "fn": counts.fn,
            }
        )

    out = context.out
    write_csv(out / "scale.csv", rows, COLUMNS)
    files = ["scale.csv"]
    if context.draw:
        people = [r["people"] for r in rows]
        title = f"k1={k1} k2={k2} threshold={threshold:g}\n{context.model_label()}"
        plots.lines(people, {key: [r[key] for r in rows] for key in ("precision", "recall", "f1")}, out / "scale_accuracy.png", f"Accuracy against gallery size, {title}", "people enrolled", "score")
        plots.lines(people, {"load time": [r["load_seconds"] for r in rows]}, out / "scale_load_time.png", f"Gallery load time (images to index), {title}", "people enrolled", "seconds")
        files += ["scale_accuracy.png", "scale_load_time.png"]
    write_run_record(context, "scale", {"split": split.description, "k1": k1, "k2": k2, "threshold": threshold, "sizes": sizes, "files": files})
    return rows
