"""Helpers for the exporters: manifests, parity figures, latency and reading image folders."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeface.errors import ImageError
from edgeface.imageio import IMAGE_EXTENSIONS, is_image_file, load_image
from edgeface.manifest import (
    CropSpec,
    InputSpec,
    Manifest,
    OutputSpec,
    manifest_path_for,
    save_manifest,
    sha256_file,
)

log = logging.getLogger(__name__)


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


def load_images(folder: Path, limit: int) -> list[Any]:
    """Read up to ``limit`` images from ``folder`` and its subfolders as RGB PIL images.

    The files are sorted by path and picked at even steps, so a large folder
    (one subfolder per person) contributes images from across the whole list.
    Files that :func:`edgeface.imageio.load_image` rejects are skipped with
    one warning.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder {folder} not found")
    files = sorted(path for path in folder.rglob("*") if is_image_file(path) and path.is_file())
    if not files:
        raise ImageError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {folder}")
    step = max(1, len(files) // limit)
    chosen = files[::step][:limit]

    images = []
    rejected = []
    for path in chosen:
        try:
            images.append(Image.fromarray(load_image(path)))
        except ImageError as error:
            rejected.append(error)
    if rejected:
        log.warning("skipped %d unreadable images in %s, first: %s", len(rejected), folder, rejected[0])
    if not images:
        raise ImageError(f"none of the {len(chosen)} images picked from {folder} could be read")
    return images
