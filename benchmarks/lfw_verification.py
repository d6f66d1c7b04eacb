"""Measure edgeface's own pipeline on LFW verification pairs.

Every image of the pair list goes through edgeface's detector (YuNet or
dlib), the crop each model's manifest specifies, and each model given with
``--model``. All models share one detection per image, so their figures
differ only by the model. The distance of a pair is the Euclidean distance
between the two unit vectors, the gallery's matching distance.

Face choice: of several faces, the one whose box centre is nearest the
image centre (LFW centres the named person). An image with no face is a
failure: its pairs count as wrong in the accuracy and as rejected in TAR.

With View 2 (``pairs.txt``, the default) the script prints the 10-fold
accuracy (mean and standard deviation) and TAR at FAR = 0.1 %. With a View 1
file (``pairsDevTrain.txt``) and ``--tune`` it prints the single
best-accuracy threshold and the threshold at FAR = 0.1 %, the figures to
tune settings on. Run from
the repository root::

    .venv/bin/python benchmarks/lfw_verification.py --detector yunet \\
        --model models/dlib_resnet_v1.onnx --model models/dlib_resnet_v1.int8.onnx
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from edgeface.config import load_config
from edgeface.detection import Face, make_detector
from edgeface.embedding import Embedder
from edgeface.imageio import load_image
from edgeface.verification import best_threshold, read_pairs, tar_at_far, ten_fold_accuracy

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=SHARED / "data" / "lfw" / "pairs.txt", help="LFW pair list (default: View 2 pairs.txt)")
    parser.add_argument("--detector", choices=("yunet", "dlib"), default="yunet")
    parser.add_argument("--yunet-model", default=str(SHARED / "models" / "yunet" / "face_detection_yunet_2026may.onnx"))
    parser.add_argument("--model", action="append", required=True, help="embedder .onnx with its manifest; repeat to compare models")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per model (default: one per core)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pairs (a quick check; no 10-fold figures)")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="print the best-accuracy and FAR 0.1 %% thresholds of all pairs, not 10-fold figures (for View 1 files)",
    )
    parser.add_argument("--out", type=Path, default=Path("out/lfw_verification.json"), help="JSON results file")
    return parser.parse_args()


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    """Return the face whose box centre is nearest the image centre, or None."""
    if not faces:
        return None

    def offset(face: Face) -> float:
        x, y, w, h = face.box
        return (x + w / 2 - width / 2) ** 2 + (y + h / 2 - height / 2) ** 2

    return min(faces, key=offset)


def main() -> None:
    args = parse_arguments()
    pairs = read_pairs(args.pairs)
    if args.limit:
        pairs = pairs[: args.limit]
    images = sorted({path for a, b, _ in pairs for path in (a, b)})

    config = load_config(None, {"detector.backend": args.detector, "detector.yunet_model": args.yunet_model})
    detector = make_detector(config["detector"])
    embedders = [Embedder(path, threads=args.threads) for path in args.model]
    vectors = {e.manifest.name: np.full((len(images), e.dim), np.nan, dtype=np.float32) for e in embedders}
    seconds = {"detect": 0.0, **{e.manifest.name: 0.0 for e in embedders}}
    failures = 0

    print(f"{len(pairs)} pairs, {len(images)} images, detector {args.detector}, models {', '.join(vectors)}")
    for row, path in enumerate(images):
        image = load_image(path)
        start = time.perf_counter()
        face = central_face(detector.detect(image), image.shape[1], image.shape[0])
        seconds["detect"] += time.perf_counter() - start
        if face is None:
            failures += 1
            continue
        for embedder in embedders:
            start = time.perf_counter()
            crop = embedder.crop(image, face.landmarks, face.box)
            vectors[embedder.manifest.name][row] = embedder.embed_crops([crop])[0]
            seconds[embedder.manifest.name] += time.perf_counter() - start
        if (row + 1) % 1000 == 0:
            print(f"  {row + 1}/{len(images)} images")

    index = {path: row for row, path in enumerate(images)}
    first = np.array([index[a] for a, _, _ in pairs])
    second = np.array([index[b] for _, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])

    results = {
        "pairs_file": str(args.pairs),
        "pairs": len(pairs),
        "images": len(images),
        "detector": args.detector,
        "images_without_face": failures,
        "ms_per_image": {key: 1000.0 * value / len(images) for key, value in seconds.items()},
        "machine": f"{platform.machine()}, {platform.processor() or 'unknown CPU'}",
        "models": {},
    }
    print(f"images without a face: {failures}")
    for name, table in vectors.items():
        distances = np.linalg.norm(table[first] - table[second], axis=1)
        if not args.tune and not args.limit:
            figures = ten_fold_accuracy(distances, same)
            print(
                f"{name}: accuracy {100 * figures['mean']:.2f} % ± {100 * figures['std']:.2f}, "
                f"TAR {100 * figures['tar_at_far']:.2f} % at FAR 0.1 % (threshold {figures['far_threshold']:.3f}), "
                f"fold thresholds {min(figures['thresholds']):.3f}..{max(figures['thresholds']):.3f}"
            )
        else:
            threshold = best_threshold(distances, same)
            far_threshold, tar, far = tar_at_far(distances, same, 1e-3)
            accepted = distances <= threshold
            accuracy = float(((accepted & same) | (~accepted & ~same)).mean())
            figures = {"best_threshold": threshold, "accuracy": accuracy, "far_threshold": far_threshold, "tar_at_far": tar, "far_measured": far}
            print(
                f"{name}: best threshold {threshold:.3f} (accuracy {100 * accuracy:.2f} %), "
                f"FAR 0.1 % threshold {far_threshold:.3f} (TAR {100 * tar:.2f} %)"
            )
        results["models"][name] = figures

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
