"""Writing results: CSV files, printed tables and the run record beside them.

``run.json`` records what produced a result folder: the command line, the
model's name and fingerprint, the detector settings, the library versions,
the images embedded (not from the cache), the wall time, and the run's own
figures such as the number of failed detections. Result
files themselves carry no timestamps, so two runs on the same inputs write
the same bytes, except where the output is a measured time.
"""

from __future__ import annotations

import csv
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Iterable, Sequence

from .embeddings import detector_settings


def write_csv(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts) to ``path`` with a header, floats to 6 decimals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_format_cell(row[c]) for c in columns])
    return path


def _format_cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value == value else "nan"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str], percent: Sequence[str] = ()) -> str:
    """Return ``rows`` as an aligned text table; columns in ``percent`` print as percentages."""
    cells = [[str(c) for c in columns]]
    for row in rows:
        line = []
        for column in columns:
            value = row[column]
            if column in percent:
                line.append(f"{100 * value:.1f} %")
            elif isinstance(value, float):
                line.append(f"{value:.3f}")
            else:
                line.append(str(value))
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for number, line in enumerate(cells):
        text = "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths)))
        lines.append(text.rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_run_record(context, protocol: str, extra: dict) -> Path:
    """Write ``run.json`` into the context's results folder: command line, model, detector, versions and ``extra``."""
    pipeline = context.pipeline
    record = {
        "protocol": protocol,
        "command": context.command,
        "model": pipeline.model_name,
        "model_fingerprint": pipeline.fingerprint,
        "model_file": str(pipeline.embedder.manifest.model_path),
        "model_trained": pipeline.embedder.manifest.trained,
        "detector": detector_settings(context.config),
        "versions": _versions(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}",
        "images_embedded": context.embedding.images_embedded,
        "wall_seconds": round(time.perf_counter() - context.started, 1),
        **extra,
    }
    path = context.out / "run.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("edgeface", "numpy", "onnxruntime", "faiss-cpu", "opencv-python-headless", "dlib-bin", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
