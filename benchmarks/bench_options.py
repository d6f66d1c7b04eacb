"""ONNX Runtime session options for an embedder, compared by measurement.

Each combination of intra-op threads, graph optimisation level and execution
mode gets its own session on the same model. The combinations take turns
within each round, so load from other processes falls on all of them alike.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np

THREADS = (1, 2, 0)
"""Intra-op thread counts; 0 lets ONNX Runtime choose (one per physical core)."""
LEVELS = ("basic", "extended", "all")
MODES = ("sequential", "parallel")


def session_options(threads: int, level: str, mode: str):
    import onnxruntime

    levels = {
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    modes = {
        "sequential": onnxruntime.ExecutionMode.ORT_SEQUENTIAL,
        "parallel": onnxruntime.ExecutionMode.ORT_PARALLEL,
    }
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = levels[level]
    options.execution_mode = modes[mode]
    options.log_severity_level = 3
    return options


def measure_session_options(embedder, chips: list[np.ndarray], rounds: int) -> dict:
    """Return milliseconds per face (one face per call) for every option combination.

    ``embedder`` provides the preprocessing; its session is swapped for each
    combination's session while that combination runs, and restored after.
    """
    import onnxruntime

    if not chips:
        raise ValueError("no face chips to time: the detector found no face in the sample photos")
    combinations = list(itertools.product(THREADS, LEVELS, MODES))
    sessions = {
        combination: onnxruntime.InferenceSession(
            str(embedder.manifest.model_path), session_options(*combination), providers=["CPUExecutionProvider"]
        )
        for combination in combinations
    }
    original = embedder.session
    per_face: dict[tuple, list[float]] = {combination: [] for combination in combinations}
    try:
        for round_index in range(rounds + 1):
            order = combinations[round_index % len(combinations) :] + combinations[: round_index % len(combinations)]
            for combination in order:
                embedder.session = sessions[combination]
                start = time.perf_counter()
                for chip in chips:
                    embedder.embed_crops([chip])
                elapsed = (time.perf_counter() - start) * 1000.0 / len(chips)
                if round_index > 0:  # the first round warms every session up
                    per_face[combination].append(elapsed)
    finally:
        embedder.session = original

    rows = [
        {"threads": threads, "level": level, "mode": mode, "ms_per_face": float(np.median(values))}
        for (threads, level, mode), values in per_face.items()
    ]
    best = min(rows, key=lambda row: row["ms_per_face"])
    return {"faces": len(chips), "rounds": rounds, "cpus": os.cpu_count(), "rows": rows, "best": best}
