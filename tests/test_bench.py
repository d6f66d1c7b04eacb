"""Correctness of the benchmark's computations: summaries, interleaving, recall and the report.

These tests time nothing: speed figures come from ``python -m benchmarks.bench``.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from benchmarks.bench_gallery import build_ivf, clustered_unit_vectors, measure_scaling, recall_at_k
from benchmarks.bench_pipelines import (
    FrameTiming,
    compare_on_frames,
    end_to_end_ratio,
    nearest_within,
    percentile_summary,
    rotated,
)
from benchmarks.bench_report import SECTIONS, format_report


def test_percentile_summary_values():
    summary = percentile_summary(range(1, 101))
    assert summary["count"] == 100
    assert summary["median"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)


def test_percentile_summary_empty():
    summary = percentile_summary([])
    assert summary["count"] == 0
    assert np.isnan(summary["median"])


def test_rotated_visits_every_position():
    items = ["a", "b", "c"]
    firsts = [rotated(items, offset)[0] for offset in range(3)]
    assert firsts == ["a", "b", "c"]
    assert rotated(items, 4) == ["b", "c", "a"]
    assert rotated([], 2) == []


def test_compare_rotates_and_adds_decode():
    calls = []

    def runner(name, milliseconds):
        def run(frame):
            calls.append(name)
            return FrameTiming({"detect": milliseconds, "embed": 1.0}, faces=1, cpu_ms=0.0, names=[None])

        return run

    runners = {"slow": runner("slow", 9.0), "fast": runner("fast", 1.0)}
    summary = compare_on_frames([np.zeros(1), np.zeros(1)], [10.0, 10.0], runners)

    assert calls == ["slow", "fast", "fast", "slow"]
    assert summary["slow"]["total_seconds"] == pytest.approx(0.040)
    assert summary["fast"]["total_seconds"] == pytest.approx(0.024)
    assert summary["fast"]["end_to_end"]["median"] == pytest.approx(12.0)
    assert summary["fast"]["faces"] == 2
    assert summary["fast"]["named"] == 0
    assert end_to_end_ratio(summary, "slow", "fast") == pytest.approx(40 / 24)


def test_baseline_match_tolerance():
    known = np.array([[0.0, 0.0], [1.0, 0.0]])
    names = ["ana", "ben"]
    assert nearest_within(known, names, np.array([0.9, 0.0]), 0.6) == "ben"
    assert nearest_within(known, names, np.array([0.5, 0.6]), 0.6) is None
    assert nearest_within(np.zeros((0, 2)), [], np.array([0.0, 0.0]), 0.6) is None


def test_recall_at_k_counts_overlap():
    exact = np.array([[0, 1, 2], [3, 4, 5]])
    approximate = np.array([[2, 0, 9], [5, 4, 3]])
    assert recall_at_k(exact, approximate) == pytest.approx((2 / 3 + 1) / 2)


def test_recall_at_k_ignores_missing():
    assert recall_at_k(np.array([[0, 1]]), np.array([[-1, -1]])) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(np.array([[0, 1]]), np.array([[0]]))


def test_ivf_probing_all_lists_is_exact():
    rng = np.random.default_rng(1)
    vectors, _ = clustered_unit_vectors(2000, rng)
    queries = vectors[:20] + 0.01
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    ivf = build_ivf(vectors, rng)
    ivf.nprobe = ivf.nlist

    _, exact_ids = exact.search(queries, 5)
    _, ivf_ids = ivf.search(queries, 5)
    assert recall_at_k(exact_ids, ivf_ids) == pytest.approx(1.0)


def test_clustered_vectors_are_unit():
    vectors, centres = clustered_unit_vectors(12, np.random.default_rng(0))
    assert vectors.shape == (12, 128)
    assert len(centres) == 3
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_scaling_row_has_recall_and_sizes():
    rows = measure_scaling([500], queries=5, k=5)
    row = rows[0]
    assert row["size"] == 500
    assert row["flat"]["serialized_bytes"] >= 500 * 128 * 4
    assert 0.0 <= row["ivf"]["recall_at_k"] <= 1.0
    assert row["ivf"]["latency_ms"]["count"] == 5


def test_report_has_every_section():
    timing = {"count": 3, "median": 1.0, "p95": 2.0}
    pipeline = {
        "stages": {"detect": timing},
        "end_to_end": timing,
        "total_seconds": 1.0,
        "cpu_seconds": 1.0,
        "faces": 3,
        "frames": 3,
        "named": 0,
    }
    loop = {"label": "edgeface", "frames": 3, "faces": 3, "fps": 10.0, "cpu_seconds": 0.3, "peak_rss_bytes": 100e6, "load": [1.0, 1.0]}
    scaling_index = {"latency_ms": timing, "latency_one_thread_ms": timing, "serialized_bytes": 1000, "build_seconds": 0.1}
    results = {
        "command": "python -m benchmarks.bench",
        "date": "2026-01-01 00:00 UTC",
        "machine": {"cpu": "cpu", "logical_cpus": 2, "system": "Linux", "python": "3.11", "versions": {"onnxruntime": "1"}},
        "load": {"start": [1.0, 1.0, 1.0], "end": [1.0, 1.0, 1.0]},
        "comparison": {
            "sets": {
                "video": {
                    "frames": 3,
                    "decode_ms": timing,
                    "pipelines": {"face_recognition": pipeline, "edgeface": pipeline},
                    "ratios": {"edgeface": 1.0},
                }
            }
        },
        "stages": {
            "decode": {"video": timing},
            "detect": {"YuNet, video": timing},
            "models": {"dlib": {"align": timing, "embed": timing}},
            "search_vote": timing,
            "gallery_vectors": 9,
            "faces": 3,
        },
        "loops": [loop],
        "session_options": {
            "faces": 3,
            "rounds": 1,
            "rows": [{"threads": 1, "level": "all", "mode": "sequential", "ms_per_face": 1.0}],
            "best": {"threads": 1, "level": "all", "mode": "sequential", "ms_per_face": 1.0},
        },
        "scaling": [
            {
                "size": 1000,
                "flat": scaling_index,
                "ivf": {**scaling_index, "lists": 126, "nprobe": 16, "recall_at_k": 0.99},
            }
        ],
        "enrolment": {"yunet": [{"people": 10, "photos": 50, "vectors": 50, "photos_per_second": 5.0, "gallery_bytes": 1000, "load_ms": timing}]},
    }
    report = format_report(results)
    for title in SECTIONS:
        assert title in report
    assert "Not measured" not in report
    assert "ESTIMATES" in report


def test_report_marks_missing_section():
    report = format_report({"machine": {}, "load": {}})
    assert report.count("Not measured") == len(SECTIONS)
