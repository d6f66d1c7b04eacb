"""Steps shared by every exporter: manifests, parity figures and latency."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeface.manifest import (
    CropSpec,
    InputSpec,
    Manifest,
    OutputSpec,
    manifest_path_for,
    save_manifest,
    sha256_file,
)


def write_manifest(
    model_path: Path,
    name: str,
    input_spec: InputSpec,
    crop: CropSpec,
    output: OutputSpec,
    trained: bool,
    source: dict[str, Any],
) -> Manifest:
    """Hash ``model_path`` and write its manifest beside it; return the manifest."""
    manifest = Manifest(
        name=name,
        model_file=model_path.name,
        sha256=sha256_file(model_path),
        input=input_spec,
        crop=crop,
        output=output,
        trained=trained,
        source=source,
    )
    save_manifest(manifest, manifest_path_for(model_path))
    return manifest


def cosine_stats(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Return the mean and minimum row-wise cosine between two ``(n, d)`` arrays."""
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    candidate = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cosines = (reference * candidate).sum(axis=1)
    return {"mean": float(cosines.mean()), "min": float(cosines.min()), "count": int(len(cosines))}


def median_ms(run: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> float:
    """Return the median wall-clock milliseconds of ``run()`` over ``repeats`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
