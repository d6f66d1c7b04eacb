"""Per-stage timing of edgeface and of the face_recognition-style baseline on the same frames.

The baseline makes the calls the face_recognition library makes:
``dlib.get_frontal_face_detector()`` run with one upsampling,
``dlib.shape_predictor`` with the 5-point model,
``face_recognition_model_v1.compute_face_descriptor(image, shape, 1)``, and a
match when the Euclidean distance to a known descriptor is at most 0.6.

Every comparison runs each pipeline on one decoded frame before moving to the
next frame, and rotates which pipeline goes first, so load from other
processes slows all of them alike and the ratios stay fair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import cv2
import numpy as np

from edgeface.detection import face_recognition_model_path
from edgeface.imageio import is_image_file, load_image
from edgeface.voting import VotingParams, vote

if TYPE_CHECKING:
    # Imported for types only: the baseline's loop process must not load FAISS or ONNX Runtime.
    from edgeface.gallery import Gallery
    from edgeface.pipeline import Pipeline

BASELINE_TOLERANCE = 0.6
"""face_recognition's default ``tolerance`` of ``compare_faces``, a Euclidean distance."""


def milliseconds_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def percentile_summary(values: Iterable[float]) -> dict[str, float | int]:
    """Return the count, median and 95th percentile (linear interpolation) of ``values``."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return {"count": 0, "median": float("nan"), "p95": float("nan")}
    return {"count": int(array.size), "median": float(np.median(array)), "p95": float(np.percentile(array, 95))}


def rotated(items: list, offset: int) -> list:
    """Return ``items`` rotated left by ``offset``, so each item takes every position in turn."""
    if not items:
        return []
    offset %= len(items)
    return items[offset:] + items[:offset]


# ---------------------------------------------------------------------------
# Frames


def iterate_video(path: Path) -> Iterator[tuple[np.ndarray, float]]:
    """Yield each frame of a video as RGB with the milliseconds spent reading and converting it."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"error: cannot open video {path}: pass --video FILE")
    try:
        while True:
            start = time.perf_counter()
            ok, bgr = capture.read()
            if not ok:
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield rgb, milliseconds_since(start)
    finally:
        capture.release()


def read_video(path: Path, limit: int | None = None) -> tuple[list[np.ndarray], list[float]]:
    """Return up to ``limit`` RGB frames of a video and the decode milliseconds of each."""
    frames, decode_ms = [], []
    for frame, elapsed in iterate_video(path):
        frames.append(frame)
        decode_ms.append(elapsed)
        if limit is not None and len(frames) >= limit:
            break
    if not frames:
        raise SystemExit(f"error: no frame could be read from {path}")
    return frames, decode_ms


def lfw_sample(images_dir: Path, count: int) -> list[Path]:
    """Return the first photo of ``count`` LFW people spread evenly over the sorted people."""
    people = sorted(p for p in images_dir.iterdir() if p.is_dir())
    if not people:
        raise SystemExit(f"error: no person folders under {images_dir}: pass --lfw DIR")
    step = max(1, len(people) // count)
    paths = []
    for person in people[::step][:count]:
        photos = sorted(p for p in person.iterdir() if is_image_file(p))
        if photos:
            paths.append(photos[0])
    return paths


def read_images(paths: list[Path]) -> tuple[list[np.ndarray], list[float]]:
    """Decode photos with edgeface's ``load_image`` and return them with the milliseconds of each."""
    images, decode_ms = [], []
    for path in paths:
        start = time.perf_counter()
        images.append(load_image(path))
        decode_ms.append(milliseconds_since(start))
    return images, decode_ms


# ---------------------------------------------------------------------------
# The two pipelines, one frame at a time


@dataclass
class FrameTiming:
    """Milliseconds per stage for one frame through one pipeline, and CPU milliseconds in total."""

    stages: dict[str, float]
    faces: int
    cpu_ms: float
    names: list[str | None] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.stages.values())


class BaselinePipeline:
    """dlib's detector, 5-point landmarks and face descriptor, called as face_recognition calls them."""

    def __init__(self) -> None:
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(face_recognition_model_path("shape_predictor_5_face_landmarks.dat")))
        self.encoder = dlib.face_recognition_model_v1(
            str(face_recognition_model_path("dlib_face_recognition_resnet_model_v1.dat"))
        )
        self.known = np.zeros((0, 128))
        self.known_names: list[str] = []

    def encodings(self, image: np.ndarray) -> list[np.ndarray]:
        """Return the 128-d descriptor of every face dlib finds in an RGB frame."""
        rects = self.detector(image, 1)
        shapes = [self.predictor(image, rect) for rect in rects]
        return [np.asarray(self.encoder.compute_face_descriptor(image, shape, 1)) for shape in shapes]

    def enrol(self, name: str, image: np.ndarray) -> bool:
        """Add the first face of ``image`` under ``name``, as face_recognition's examples do."""
        found = self.encodings(image)
        if not found:
            return False
        self.known = np.vstack([self.known, found[0]])
        self.known_names.append(name)
        return True

    def match(self, encoding: np.ndarray) -> str | None:
        """Return the nearest known name within face_recognition's tolerance, or None."""
        return nearest_within(self.known, self.known_names, encoding, BASELINE_TOLERANCE)

    def time_frame(self, image: np.ndarray) -> FrameTiming:
        """Run one frame through every stage and time each stage."""
        cpu_start = time.process_time()
        start = time.perf_counter()
        rects = self.detector(image, 1)
        detect_ms = milliseconds_since(start)

        start = time.perf_counter()
        shapes = [self.predictor(image, rect) for rect in rects]
        landmarks_ms = milliseconds_since(start)

        start = time.perf_counter()
        encodings = [np.asarray(self.encoder.compute_face_descriptor(image, shape, 1)) for shape in shapes]
        embed_ms = milliseconds_since(start)

        start = time.perf_counter()
        names = [self.match(encoding) for encoding in encodings]
        search_ms = milliseconds_since(start)

        stages = {"detect": detect_ms, "landmarks": landmarks_ms, "embed": embed_ms, "search": search_ms}
        return FrameTiming(stages, len(rects), (time.process_time() - cpu_start) * 1000.0, names)


def nearest_within(known: np.ndarray, names: list[str], encoding: np.ndarray, tolerance: float) -> str | None:
    """Return the name of the nearest known vector if its Euclidean distance is at most ``tolerance``."""
    if len(known) == 0:
        return None
    distances = np.linalg.norm(known - encoding, axis=1)
    best = int(np.argmin(distances))
    return names[best] if distances[best] <= tolerance else None


def time_edgeface_frame(pipeline: Pipeline, image: np.ndarray, gallery: Gallery, params: VotingParams) -> FrameTiming:
    """Run one frame through edgeface's stages as ``Pipeline.identify`` does, timing each stage.

    Detection includes the detector's landmarks (dlib's shape predictor for
    the dlib backend). Align is the crop of every face, embed one batched
    model call.
    """
    cpu_start = time.process_time()
    start = time.perf_counter()
    faces = pipeline.detect(image)
    detect_ms = milliseconds_since(start)

    start = time.perf_counter()
    crops = [pipeline.embedder.crop(image, face.landmarks, face.box) for face in faces]
    align_ms = milliseconds_since(start)

    start = time.perf_counter()
    vectors = pipeline.embedder.embed_crops(crops)
    embed_ms = milliseconds_since(start)

    start = time.perf_counter()
    names: list[str | None] = []
    if faces:
        distances, people = gallery.search(vectors, params.k2)
        names = [vote(people[i], distances[i], params).person for i in range(len(faces))]
    search_ms = milliseconds_since(start)

    stages = {"detect": detect_ms, "align": align_ms, "embed": embed_ms, "search": search_ms}
    return FrameTiming(stages, len(faces), (time.process_time() - cpu_start) * 1000.0, names)


def compare_on_frames(
    frames: list[np.ndarray],
    decode_ms: list[float],
    runners: dict[str, Callable[[np.ndarray], FrameTiming]],
) -> dict[str, dict]:
    """Run every pipeline on every frame, rotating their order per frame, and summarise.

    Each frame's decode time is added to every pipeline's end-to-end time,
    since each of them has to read the frame.
    """
    names = list(runners)
    timings: dict[str, list[FrameTiming]] = {name: [] for name in names}
    for index, frame in enumerate(frames):
        for name in rotated(names, index):
            timings[name].append(runners[name](frame))

    summary = {}
    for name, rows in timings.items():
        stages = {stage: percentile_summary(row.stages[stage] for row in rows) for stage in rows[0].stages}
        totals = [decode + row.total for decode, row in zip(decode_ms, rows)]
        summary[name] = {
            "stages": stages,
            "end_to_end": percentile_summary(totals),
            "total_seconds": sum(totals) / 1000.0,
            "cpu_seconds": sum(row.cpu_ms for row in rows) / 1000.0,
            "faces": sum(row.faces for row in rows),
            "frames": len(rows),
            "named": sum(1 for row in rows for person in row.names if person is not None),
        }
    return summary


def end_to_end_ratio(summary: dict[str, dict], baseline: str, candidate: str) -> float:
    """Return how many times faster ``candidate`` ran than ``baseline`` over the same frames (total time)."""
    return summary[baseline]["total_seconds"] / summary[candidate]["total_seconds"]


# ---------------------------------------------------------------------------
# One model's crop and embedding time per face


def time_models_per_face(
    samples: list[tuple[np.ndarray, object]],
    embedders: dict[str, object],
) -> dict[str, dict[str, dict]]:
    """Time align and embed of single faces for each model, rotating the model order per face.

    ``samples`` contains ``(frame, Face)`` pairs from one detector and
    ``embedders`` maps a model label to its :class:`Embedder`. The model is
    called with one face at a time, as the door sees one person at a time.
    """
    labels = list(embedders)
    align: dict[str, list[float]] = {label: [] for label in labels}
    embed: dict[str, list[float]] = {label: [] for label in labels}
    for index, (frame, face) in enumerate(samples):
        for label in rotated(labels, index):
            embedder = embedders[label]
            start = time.perf_counter()
            crop = embedder.crop(frame, face.landmarks, face.box)
            align[label].append(milliseconds_since(start))

            start = time.perf_counter()
            embedder.embed_crops([crop])
            embed[label].append(milliseconds_since(start))
    return {label: {"align": percentile_summary(align[label]), "embed": percentile_summary(embed[label])} for label in labels}


def time_search_and_vote(gallery: Gallery, queries: np.ndarray, params: VotingParams) -> dict:
    """Time one search plus vote per query vector against ``gallery``."""
    elapsed = []
    for query in queries:
        start = time.perf_counter()
        distances, people = gallery.search(query[None, :], params.k2)
        vote(people[0], distances[0], params)
        elapsed.append(milliseconds_since(start))
    return percentile_summary(elapsed)
