"""Measure dlib's own face pipeline on LFW View 2 (6,000 pairs, 10 folds).

The pipeline is the one the face_recognition library runs: dlib's HOG
detector with one upsampling, the 5-point shape predictor, and
``compute_face_descriptor(image, shape, 0)`` on the full image (no jitter).
Distances are Euclidean between dlib's descriptors as dlib returns them, and
also between the L2-normalised descriptors, as edgeface compares them.

Accuracy is the mean ± standard deviation over the 10 folds.

Face choice: when the detector finds several faces, the one whose box centre
is nearest the image centre is used, since LFW centres the named person.
When it finds none, the image is a failure. Every pair containing it counts
as wrong in the accuracy and as rejected in TAR at FAR, and a second
accuracy column leaves those pairs out.

Descriptors are cached in ``--cache`` (an ``.npz``) every 500 images, so an
interrupted run resumes. Run from the repository root::

    .venv/bin/python benchmarks/lfw_dlib_pipeline.py [--lfw DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

from edgeface.detection import face_recognition_model_path
from edgeface.verification import read_pairs, ten_fold_accuracy

log = logging.getLogger("lfw_dlib_pipeline")

DEFAULT_LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw"
SAVE_EVERY = 500


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--lfw",
        type=Path,
        default=DEFAULT_LFW,
        metavar="DIR",
        help=f"LFW folder with pairs.txt and images/ (default: {DEFAULT_LFW})",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("out/lfw_dlib_descriptors.npz"),
        metavar="FILE",
        help="descriptor cache, reused when present (default: out/lfw_dlib_descriptors.npz)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/lfw_dlib_pipeline.json"),
        metavar="FILE",
        help="JSON file for the results (default: out/lfw_dlib_pipeline.json)",
    )
    return parser.parse_args(argv)


class DlibPipeline:
    """dlib's HOG detector, 5-point shape predictor and face descriptor, as face_recognition uses them."""

    def __init__(self) -> None:
        import dlib

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(face_recognition_model_path("shape_predictor_5_face_landmarks.dat")))
        self.descriptor = dlib.face_recognition_model_v1(
            str(face_recognition_model_path("dlib_face_recognition_resnet_model_v1.dat"))
        )

    def describe(self, path: Path) -> tuple[np.ndarray | None, int]:
        """Return the 128-d descriptor of the centre-most face (None if no face) and the face count."""
        image = self.dlib.load_rgb_image(str(path))
        detections = self.detector(image, 1)
        if len(detections) == 0:
            return None, 0

        centre_x = image.shape[1] / 2.0
        centre_y = image.shape[0] / 2.0

        def distance_to_centre(rect) -> float:
            centre = rect.center()
            return (centre.x - centre_x) ** 2 + (centre.y - centre_y) ** 2

        face = min(detections, key=distance_to_centre)
        shape = self.predictor(image, face)
        descriptor = self.descriptor.compute_face_descriptor(image, shape, 0)
        return np.asarray(descriptor, dtype=np.float64), len(detections)


def load_cache(path: Path) -> dict[str, tuple[np.ndarray | None, int]]:
    if not path.is_file():
        return {}
    data = np.load(path, allow_pickle=False)
    cache = {}
    for name, vector, faces in zip(data["names"], data["vectors"], data["faces"]):
        cache[str(name)] = (None if faces == 0 else vector, int(faces))
    return cache


def save_cache(path: Path, cache: dict[str, tuple[np.ndarray | None, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(cache)
    vectors = np.array([cache[n][0] if cache[n][0] is not None else np.zeros(128) for n in names])
    faces = np.array([cache[n][1] for n in names])
    temporary = path.with_name(path.stem + ".tmp.npz")
    np.savez(temporary, names=np.array(names), vectors=vectors, faces=faces)
    temporary.replace(path)


def pair_distances(pairs, cache, normalise: bool) -> np.ndarray:
    """Return one Euclidean distance per pair, NaN where either image has no face."""
    distances = np.full(len(pairs), np.nan)
    for index, (first, second, _) in enumerate(pairs):
        vector_a = cache[str(first)][0]
        vector_b = cache[str(second)][0]
        if vector_a is None or vector_b is None:
            continue
        if normalise:
            vector_a = vector_a / np.linalg.norm(vector_a)
            vector_b = vector_b / np.linalg.norm(vector_b)
        distances[index] = np.linalg.norm(vector_a - vector_b)
    return distances


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_arguments(argv)
    pairs_path = args.lfw / "pairs.txt"
    if not pairs_path.is_file():
        sys.exit(f"error: {pairs_path} not found: pass --lfw DIR, the folder with pairs.txt and images/")

    import dlib

    pairs = read_pairs(pairs_path)
    images = sorted({str(path) for pair in pairs for path in pair[:2]})
    cache = load_cache(args.cache)
    todo = [path for path in images if path not in cache]
    log.info("%d pairs, %d images, %d cached, %d to describe", len(pairs), len(images), len(cache), len(todo))

    pipeline = DlibPipeline()
    start = time.perf_counter()
    for done, path in enumerate(todo, start=1):
        cache[path] = pipeline.describe(Path(path))
        if cache[path][1] == 0:
            log.info("no face found in %s", path)
        if done % SAVE_EVERY == 0 or done == len(todo):
            save_cache(args.cache, cache)
            elapsed = time.perf_counter() - start
            log.info("described %d/%d images, %.0f ms per image", done, len(todo), elapsed / done * 1000)

    same = np.array([pair[2] for pair in pairs])
    results = {
        "pipeline": "dlib HOG (upsample 1), shape_predictor_5_face_landmarks, compute_face_descriptor(image, shape, 0)",
        "dlib": dlib.__version__,
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "images": len(images),
        "images_without_face": sum(1 for path in images if cache[path][1] == 0),
        "images_with_several_faces": sum(1 for path in images if cache[path][1] > 1),
    }
    for label, normalise in (("raw", False), ("l2_normalised", True)):
        results[label] = ten_fold_accuracy(pair_distances(pairs, cache, normalise), same)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    print(f"images: {results['images']}, without a face: {results['images_without_face']}, "
          f"with several faces: {results['images_with_several_faces']}")
    print(
        "| distance | accuracy, failed pairs wrong | accuracy without failed pairs | mean threshold "
        "| TAR at FAR 0.1 % | threshold at FAR 0.1 % | failed pairs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in ("raw", "l2_normalised"):
        summary = results[label]
        print(
            f"| {label} | {summary['mean'] * 100:.2f} % ± {summary['std'] * 100:.2f} | "
            f"{summary['mean_without_failures'] * 100:.2f} % ± {summary['std_without_failures'] * 100:.2f} | "
            f"{np.mean(summary['thresholds']):.3f} | {summary['tar_at_far'] * 100:.2f} % | "
            f"{summary['far_threshold']:.3f} | {summary['failures']} |"
        )
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
