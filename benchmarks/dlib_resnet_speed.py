"""Time dlib's face descriptor against the exported ONNX models on the same face chips.

Prints milliseconds per face for dlib's ``compute_face_descriptor`` and for
``dlib_resnet_v1.onnx`` (fp32) and ``dlib_resnet_v1.int8.onnx`` run through
edgeface's Embedder, one face per call and all faces in one call, with
onnxruntime on one thread and on its default thread count. Chips come from
dlib's HOG detector and 5-point shape predictor, as in the exporter's parity
check.

Run from the repository root::

    .venv/bin/python benchmarks/dlib_resnet_speed.py [--faces DIR] [--models DIR]

Without ``--models`` the models are exported into a temporary folder first.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_machine import cpu_name  # a sibling file: this script runs as a file
from edgeface.embedding import Embedder
from export.dlib_resnet import (
    FP32_NAME,
    INT8_NAME,
    default_weights,
    export,
    find_dlib_faces,
    image_files,
)

DEFAULT_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw" / "images"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--faces",
        type=Path,
        default=DEFAULT_FACES,
        metavar="DIR",
        help=f"folder of photos, searched recursively (default: {DEFAULT_FACES})",
    )
    parser.add_argument("--count", type=int, default=20, metavar="N", help="number of faces to time (default: 20)")
    parser.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="folder with the exported models (default: export them into a temporary folder)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        metavar="N",
        help="timed passes over all faces per configuration; the median pass is reported (default: 5)",
    )
    return parser.parse_args(argv)


def time_passes(run, repeats: int) -> tuple[float, float]:
    """Return the median wall-clock seconds of ``run()`` and the process CPU seconds of that pass.

    One untimed pass comes first, so model loading and first-call
    allocation are not counted.
    """
    run()
    passes = []
    for _ in range(repeats):
        wall_start = time.perf_counter()
        cpu_start = time.process_time()
        run()
        passes.append((time.perf_counter() - wall_start, time.process_time() - cpu_start))
    passes.sort()
    return passes[len(passes) // 2]


def sample_faces(folder: Path, count: int):
    """Return dlib faces from ``count`` images spread evenly over the sorted image list."""
    paths = image_files(folder)
    if not paths:
        sys.exit(f"error: no images found under {folder}: pass --faces DIR")
    step = max(1, len(paths) // count)
    faces = find_dlib_faces(paths[::step], count)
    if not faces:
        sys.exit(f"error: dlib found no face in the images under {folder}")
    return faces


def machine_description() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.count < 1 or args.repeats < 1:
        sys.exit("error: --count and --repeats must be at least 1")

    import dlib
    import onnxruntime

    # Other processes on the machine slow every row; the load average shows them.
    load_before = os.getloadavg()[0]
    faces = sample_faces(args.faces, args.count)
    chips = [face.chip for face in faces]
    count = len(chips)

    with tempfile.TemporaryDirectory() as temporary:
        models = args.models
        if models is None:
            models = Path(temporary)
            export(default_weights(), models, faces_dir=None, max_faces=1, skip_parity=True)

        rows = []
        descriptor = dlib.face_recognition_model_v1(str(default_weights()))
        single = time_passes(lambda: [descriptor.compute_face_descriptor(chip) for chip in chips], args.repeats)
        batch = time_passes(lambda: descriptor.compute_face_descriptor(chips), args.repeats)
        rows.append(("dlib compute_face_descriptor", "dlib's own (not settable)", single, batch))

        for label, file_name in (("ONNX fp32", FP32_NAME), ("ONNX int8 (dynamic)", INT8_NAME)):
            for threads in (1, None):
                embedder = Embedder(models / file_name, threads=threads)
                single = time_passes(lambda: [embedder.embed_crops([chip]) for chip in chips], args.repeats)
                batch = time_passes(lambda: embedder.embed_crops(chips), args.repeats)
                thread_text = "1" if threads else f"default ({os.cpu_count()} CPUs)"
                rows.append((label, thread_text, single, batch))

    print(f"machine: {machine_description()}")
    print(f"dlib {dlib.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}")
    print(f"faces: {count} dlib chips (150x150) from {args.faces}, median of {args.repeats} passes")
    print(f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print()
    print("| model | threads | ms/face, 1 face per call | CPU/wall | ms/face, all faces in one call |")
    print("|---|---|---:|---:|---:|")
    for label, thread_text, (single_wall, single_cpu), (batch_wall, _) in rows:
        print(
            f"| {label} | {thread_text} | {single_wall / count * 1000:.1f} | "
            f"{single_cpu / single_wall:.2f} | {batch_wall / count * 1000:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
