"""Export a CLIP image encoder (ViT-B/32 by default) with random weights and time it.

Prints the sizes of the fp32 and int8 files, their cosine to the torch model
on real face images, and the median milliseconds per image (batch of one) for
torch, fp32 ONNX and int8 ONNX at each thread count. Random weights measure
speed, size and export parity only, never recognition accuracy.

Run from the repository root::

    .venv/bin/python benchmarks/clip_export_speed.py [--model ViT-B-32] [--threads 1 2] [--faces DIR]

The export goes to a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

from bench_machine import cpu_name  # a sibling file: this script runs as a file
from export import clip

DEFAULT_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (default: ViT-B-32)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="thread counts for torch and ONNX Runtime (default: 1 2)",
    )
    parser.add_argument(
        "--faces", type=Path, default=DEFAULT_FACES, help="folder of face images for the parity check"
    )
    parser.add_argument(
        "--max-images", type=int, default=100, help="maximum face images for the parity check (default: 100)"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per measurement")
    options = parser.parse_args()

    if not options.faces.is_dir():
        parser.error(f"face folder {options.faces} not found: pass --faces DIR")
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as scratch:
        export_parser = argparse.ArgumentParser()
        clip.add_arguments(export_parser)
        args = export_parser.parse_args(
            [
                "--model",
                options.model,
                "--random-weights",
                "--faces",
                str(options.faces),
                "--max-images",
                str(options.max_images),
                "--threads",
                str(max(options.threads)),
                "--out",
                scratch,
            ]
        )
        source = clip.load_source_model(args)
        result = clip.export_model(source, args)
        paths = {"fp32": result.fp32_path, "int8": result.int8_path}
        pixels = source.preprocess(clip.load_images(options.faces, 1))

        latencies = [
            clip.measure_latency(source.encoder, paths, pixels, threads, repeats=options.repeats)
            for threads in options.threads
        ]

    print_report(options, source, result, latencies)
    # Other processes slow every figure, so the load average before the run
    # should be near 0. The one after includes this script's own threads.
    print(f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")


def print_report(options, source, result, latencies) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_name()}")
    print(f"{source.description['library']}, onnxruntime {_onnxruntime_version()}, torch {_torch_version()}")
    print(f"model: {options.model}, RANDOM weights: speed, size and parity only, no accuracy")
    print()

    images = result.parity["images"]
    print(f"| file | size (MB) | cosine to torch, mean / min over {images} faces |")
    print("| --- | ---: | --- |")
    for precision in ("fp32", "int8"):
        stats = result.parity[precision]
        size = result.sizes[precision] / 1e6
        print(f"| {precision} | {size:.1f} | {stats['mean']:.7f} / {stats['min']:.7f} |")
    print()

    print("| threads | torch (ms) | fp32 ONNX (ms) | int8 ONNX (ms) |")
    print("| ---: | ---: | ---: | ---: |")
    for latency in latencies:
        print(f"| {latency['threads']} | {latency['torch']:.1f} | {latency['fp32']:.1f} | {latency['int8']:.1f} |")
    print(f"\nmedian of {options.repeats} calls, one {source.image_size}x{source.image_size} image per call")


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
