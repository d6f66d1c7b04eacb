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


def session_options(threads: int, level: str, mode: str, spinning: bool = False):
    """Return ONNX Runtime session options; idle threads spin only when ``spinning`` is true."""
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
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
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


def measure_spinning(embedder, detector, frames: list[np.ndarray], chip: np.ndarray) -> list[dict]:
    """Time one embedding then one detection per frame, with idle ONNX Runtime threads spinning or not.

    The door daemon alternates the two, so threads left spinning after an
    embedding compete with the detector. Both settings take turns frame by
    frame on the same session options otherwise.
    """
    import onnxruntime

    sessions = {
        spinning: onnxruntime.InferenceSession(
            str(embedder.manifest.model_path),
            session_options(0, "all", "sequential", spinning=spinning),
            providers=["CPUExecutionProvider"],
        )
        for spinning in (True, False)
    }
    original = embedder.session
    embed_ms: dict[bool, list[float]] = {True: [], False: []}
    detect_ms: dict[bool, list[float]] = {True: [], False: []}
    cpu_seconds = {True: 0.0, False: 0.0}
    try:
        for index, frame in enumerate(frames):
            for spinning in ((True, False) if index % 2 else (False, True)):
                embedder.session = sessions[spinning]
                cpu_start = time.process_time()
                start = time.perf_counter()
                embedder.embed_crops([chip])
                embed_ms[spinning].append((time.perf_counter() - start) * 1000.0)

                start = time.perf_counter()
                detector.detect(frame)
                detect_ms[spinning].append((time.perf_counter() - start) * 1000.0)
                cpu_seconds[spinning] += time.process_time() - cpu_start
    finally:
        embedder.session = original

    return [
        {
            "spinning": spinning,
            "embed_ms": float(np.median(embed_ms[spinning])),
            "detect_ms": float(np.median(detect_ms[spinning])),
            "cpu_seconds": cpu_seconds[spinning],
            "frames": len(frames),
        }
        for spinning in (True, False)
    ]
