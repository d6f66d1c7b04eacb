"""Gallery scaling (FAISS exact and IVF search) and enrolment throughput.

The scaling vectors are synthetic but shaped like face embeddings: each
"person" is a random unit vector, and each of their photos is that vector
plus Gaussian noise, renormalised. Random vectors without that structure
would be the worst case for an IVF index, whose lists follow clusters.
"""

from __future__ import annotations

import math
import shutil
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from edgeface.enrolment import sync_gallery
from edgeface.gallery import Gallery
from edgeface.imageio import is_image_file
from edgeface.pipeline import Pipeline

from .bench_machine import status_bytes
from .bench_pipelines import milliseconds_since, percentile_summary

DIM = 128
PHOTOS_PER_PERSON = 5
NOISE = 0.03
"""Per-dimension noise of each photo.

At 128 dimensions a photo lies about 0.32 from its person's centre and 0.45
from another photo of the same person (Euclidean distance).
"""
IVF_MAX_LISTS = 1024
IVF_NPROBE = 16


def clustered_unit_vectors(count: int, rng: np.random.Generator, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """Return ``count`` unit vectors in groups of ``PHOTOS_PER_PERSON`` around random centres, and the centres."""
    people = math.ceil(count / PHOTOS_PER_PERSON)
    centres = unit_rows(rng.standard_normal((people, dim), dtype=np.float32))
    vectors = np.repeat(centres, PHOTOS_PER_PERSON, axis=0)[:count]
    vectors += NOISE * rng.standard_normal(vectors.shape, dtype=np.float32)
    return unit_rows(vectors), centres


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def recall_at_k(exact_ids: np.ndarray, approximate_ids: np.ndarray) -> float:
    """Return the mean share of each query's exact ``k`` neighbours that the approximate search also found.

    Both arrays are ``(queries, k)`` row ids; ``-1`` (FAISS's "no result")
    in the approximate rows never matches.
    """
    exact_ids = np.asarray(exact_ids)
    approximate_ids = np.asarray(approximate_ids)
    if exact_ids.shape != approximate_ids.shape:
        raise ValueError(f"shapes differ: exact {exact_ids.shape}, approximate {approximate_ids.shape}")
    found = [len(set(exact.tolist()) & set(approx.tolist()) - {-1}) for exact, approx in zip(exact_ids, approximate_ids)]
    return float(np.mean(found) / exact_ids.shape[1])


def ivf_lists(count: int) -> int:
    """Return the IVF list count: about 4 * sqrt(n), capped so training stays in seconds on 2 cores."""
    return max(1, min(IVF_MAX_LISTS, round(4 * math.sqrt(count))))


def build_ivf(vectors: np.ndarray, rng: np.random.Generator) -> faiss.IndexIVFFlat:
    """Train an inner-product IVF index on a sample of ``vectors`` (64 per list) and add them all."""
    lists = ivf_lists(len(vectors))
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    sample_size = min(len(vectors), 64 * lists)
    sample = vectors[rng.choice(len(vectors), sample_size, replace=False)]
    index.train(sample)
    index.add(vectors)
    index.nprobe = min(IVF_NPROBE, lists)
    return index


def time_single_queries(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    """Search one query per call, as the door does, and return the latency summary and the ids."""
    ids = []
    elapsed = []
    for query in queries:
        start = time.perf_counter()
        _, rows = index.search(query[None, :], k)
        elapsed.append(milliseconds_since(start))
        ids.append(rows[0])
    return percentile_summary(elapsed), np.stack(ids)


def measure_scaling(sizes: list[int], queries: int, k: int, seed: int = 0) -> list[dict]:
    """Measure build time, memory, single-query latency and IVF recall at each gallery size.

    Queries are fresh noisy photos of enrolled people, so each has real
    neighbours, as a face at the door has.
    """
    results = []
    for size in sizes:
        rng = np.random.default_rng(seed)
        vectors, centres = clustered_unit_vectors(size, rng)
        people = rng.integers(0, len(centres), queries)
        probe = unit_rows(centres[people] + NOISE * rng.standard_normal((queries, DIM), dtype=np.float32))

        row = {"size": size}
        for kind in ("flat", "ivf"):
            before = status_bytes("VmRSS")
            start = time.perf_counter()
            if kind == "flat":
                index = faiss.IndexFlatIP(DIM)
                index.add(vectors)
            else:
                index = build_ivf(vectors, rng)
            build_s = time.perf_counter() - start
            latency, ids = time_single_queries(index, probe, k)
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            latency_one_thread, _ = time_single_queries(index, probe, k)
            faiss.omp_set_num_threads(threads)
            row[kind] = {
                "build_seconds": build_s,
                "serialized_bytes": int(faiss.serialize_index(index).size),
                "rss_growth_bytes": max(0, status_bytes("VmRSS") - before),
                "latency_ms": latency,
                "latency_one_thread_ms": latency_one_thread,
                "openmp_threads": threads,
            }
            if kind == "flat":
                exact_ids = ids
            else:
                row[kind]["lists"] = index.nlist
                row[kind]["nprobe"] = index.nprobe
                row[kind]["recall_at_k"] = recall_at_k(exact_ids, ids)
            del index
        row["k"] = k
        row["vectors_bytes"] = int(vectors.nbytes)
        results.append(row)
        del vectors
    return results


# ---------------------------------------------------------------------------
# Enrolment


def make_people_folder(lfw_images: Path, people: int, photos_per_person: int, target: Path) -> int:
    """Copy the first photos of the first ``people`` LFW people (sorted) into ``target``; return the photo count.

    Copies, not links: enrolment rejects links that lead out of the people
    folder, as it does on a USB stick.

    People with fewer photos contribute what they have, so the count may be
    less than ``people * photos_per_person``.
    """
    folders = sorted(p for p in lfw_images.iterdir() if p.is_dir())[:people]
    total = 0
    for folder in folders:
        photos = sorted(p for p in folder.iterdir() if is_image_file(p))[:photos_per_person]
        person = target / folder.name
        person.mkdir(parents=True)
        for photo in photos:
            shutil.copyfile(photo, person / photo.name)
        total += len(photos)
    return total


def measure_enrolment(pipeline: Pipeline, lfw_images: Path, sizes: list[tuple[int, int]], loads: int = 5) -> list[dict]:
    """Enrol LFW people into a fresh gallery and time the enrolment and ``Gallery.load``.

    ``sizes`` contains ``(people, photos per person)`` pairs.
    """
    results = []
    for people, per_person in sizes:
        with tempfile.TemporaryDirectory() as scratch:
            people_dir = Path(scratch) / "people"
            gallery_dir = Path(scratch) / "gallery"
            photos = make_people_folder(lfw_images, people, per_person, people_dir)

            start = time.perf_counter()
            reports = sync_gallery(people_dir, gallery_dir, pipeline, 2.0).people
            enrol_s = time.perf_counter() - start

            load_ms = []
            for _ in range(loads):
                start = time.perf_counter()
                Gallery.load(gallery_dir)
                load_ms.append(milliseconds_since(start))
            results.append(
                {
                    "people": people,
                    "photos": photos,
                    "enrolled_people": sum(1 for r in reports if r.used),
                    "vectors": sum(r.used for r in reports),
                    "enrol_seconds": enrol_s,
                    "photos_per_second": photos / enrol_s,
                    "gallery_bytes": os.path.getsize(gallery_dir / "gallery.npz"),
                    "load_ms": percentile_summary(load_ms),
                }
            )
    return results
