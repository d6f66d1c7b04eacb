"""Embed image files for evaluation: one face per image, cached across runs.

Each image gives at most one vector: of the faces the pipeline keeps (at
least ``detector.min_face_size`` pixels), the one whose box centre is nearest
the image centre, because data sets such as LFW centre the named person. An
image with no such face, or that cannot be read, is a failure with a reason.

Two caches sit under the cache folder. Detections are keyed by the detector
settings, so models that share a detector detect once. Embeddings are keyed
by the model fingerprint and the detector settings. Both key each image by
the sha256 of its bytes, so renamed or copied files are not embedded again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..detection import Face
from ..errors import ImageError
from ..imageio import load_image
from ..pipeline import Pipeline
from .cache import ResultCache, cache_key, file_sha256
from .progress import Progress

log = logging.getLogger(__name__)

# Detection rows: box (x, y, width, height), five (x, y) landmarks, score.
DETECTION_WIDTH = 15
SAVE_EVERY = 500


@dataclass
class EmbeddedImages:
    """Vectors of a list of images, in the order given.

    ``vectors`` is ``(n, dim)`` float32 with NaN rows for failures, and
    ``reasons[i]`` is ``""`` for a success or why image ``i`` failed.
    ``embedded`` counts images embedded in this run (not from the cache).
    """

    paths: list[Path]
    vectors: np.ndarray
    reasons: list[str]
    embedded: int = 0
    seconds: float = 0.0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the images that have a vector."""
        return ~np.isnan(self.vectors[:, 0]) if len(self.vectors) else np.zeros(0, dtype=bool)

    def take(self, rows: Sequence[int]) -> EmbeddedImages:
        """Return the images at ``rows``, in that order."""
        rows = list(rows)
        paths = [self.paths[i] for i in rows]
        reasons = [self.reasons[i] for i in rows]
        failed = [(path, reason) for path, reason in zip(paths, reasons) if reason]
        return EmbeddedImages(paths, self.vectors[rows], reasons, failed=failed)


def central_face(faces: Sequence[Face], width: int, height: int) -> Face | None:
    """Return the face whose box centre is nearest the image centre, or None.

    Equal offsets go to the earlier face, which is the larger one because
    detectors return faces largest first.
    """
    best = None
    best_offset = float("inf")
    for face in faces:
        x, y, w, h = face.box
        offset = (x + w / 2 - width / 2) ** 2 + (y + h / 2 - height / 2) ** 2
        if offset < best_offset:
            best, best_offset = face, offset
    return best


def detection_row(face: Face) -> np.ndarray:
    """Return a face as a float32 detection-cache row: box, landmarks, score."""
    return np.concatenate(
        [np.asarray(face.box, dtype=np.float32), np.asarray(face.landmarks, dtype=np.float32).reshape(10), [face.score]]
    ).astype(np.float32)


def face_from_row(row: np.ndarray) -> Face:
    """Return the face of a detection-cache row."""
    return Face(
        box=tuple(float(v) for v in row[:4]),
        landmarks=np.asarray(row[4:14], dtype=np.float64).reshape(5, 2),
        score=float(row[14]),
    )


def detector_settings(config: dict) -> dict:
    """Return the detector settings that decide which face an image gives.

    The YuNet model is named by its file's sha256, so moving it keeps the
    cache valid and replacing it does not.
    """
    settings = dict(config["detector"])
    yunet = settings.pop("yunet_model")
    if settings["backend"] == "yunet":
        settings["yunet_sha256"] = file_sha256(yunet) if Path(yunet).is_file() else str(yunet)
    settings["face_choice"] = "central"
    return settings


class Embedding:
    """Embeds image files with one pipeline, reading and filling the caches.

    :param pipeline: the detector and embedder to evaluate.
    :param config: the configuration the pipeline was built from; its
        ``detector`` section keys the caches.
    :param cache_dir: folder of the cache files, or None for no cache.
    """

    def __init__(self, pipeline: Pipeline, config: dict, cache_dir: str | os.PathLike[str] | None) -> None:
        self.pipeline = pipeline
        self.detection_key = cache_key(detector_settings(config))
        self.embedding_key = cache_key({"model": pipeline.fingerprint, "detector": self.detection_key})
        self.images_embedded = 0
        self.detections: ResultCache | None = None
        self.vectors: ResultCache | None = None
        if cache_dir is not None:
            folder = Path(cache_dir)
            self.detections = ResultCache(folder / f"faces-{self.detection_key}.npz", DETECTION_WIDTH)
            self.vectors = ResultCache(
                folder / f"vectors-{pipeline.model_name}-{self.embedding_key}.npz", pipeline.embedder.dim
            )

    def embed(self, paths: Sequence[str | os.PathLike[str]], label: str = "embedding") -> EmbeddedImages:
        """Return the vectors of ``paths``, embedding only the images not cached."""
        paths = [Path(p) for p in paths]
        dim = self.pipeline.embedder.dim
        vectors = np.full((len(paths), dim), np.nan, dtype=np.float32)
        reasons = [""] * len(paths)
        embedded = 0
        start = time.perf_counter()
        progress = Progress(len(paths), label)
        try:
            for row, path in enumerate(paths):
                vector, reason, fresh = self._embed_one(path)
                if vector is not None:
                    vectors[row] = vector
                reasons[row] = reason
                embedded += fresh
                if fresh and embedded % SAVE_EVERY == 0:
                    self.save()
                progress.advance()
        finally:
            progress.close()
            self.save()

        self.images_embedded += embedded
        failed = [(path, reason) for path, reason in zip(paths, reasons) if reason]
        return EmbeddedImages(paths, vectors, reasons, embedded, time.perf_counter() - start, failed)

    def embed_uncached(self, paths: Sequence[str | os.PathLike[str]]) -> EmbeddedImages:
        """Detect and embed every image without reading or writing the caches (for timing)."""
        saved = self.detections, self.vectors
        self.detections = self.vectors = None
        try:
            return self.embed(paths, label="embedding (uncached)")
        finally:
            self.detections, self.vectors = saved

    def save(self) -> None:
        for cache in (self.detections, self.vectors):
            if cache is not None:
                cache.save()

    def _embed_one(self, path: Path) -> tuple[np.ndarray | None, str, bool]:
        """Return ``(vector or None, failure reason, whether the model ran)``."""
        try:
            sha256 = file_sha256(path) if self.vectors is not None else ""
        except OSError as error:
            return None, f"cannot read: {error.strerror or error}", False
        if self.vectors is not None and sha256 in self.vectors:
            vector, reason = self.vectors.get(sha256)
            return vector, reason, False

        try:
            image = load_image(path)
        except ImageError as error:
            reason = str(error)
            self._store(sha256, None, None, reason)
            return None, reason, False

        face, reason = self._face(image, sha256)
        if face is None:
            self._store(sha256, None, None, reason)
            return None, reason, False

        vector = self.pipeline.embed(image, [face])[0]
        self._store(sha256, face, vector, "")
        return vector, "", True

    def _face(self, image: np.ndarray, sha256: str) -> tuple[Face | None, str]:
        if self.detections is not None and sha256 in self.detections:
            row, reason = self.detections.get(sha256)
            if row is None:
                return None, reason
            return face_from_row(row), ""

        faces = self.pipeline.detect(image)
        face = central_face(faces, image.shape[1], image.shape[0])
        if face is None:
            reason = "no face found"
            if self.pipeline.min_face_size:
                reason += f" (faces smaller than {self.pipeline.min_face_size} px are ignored)"
            return None, reason

        # The cache stores float32 coordinates. Rounding a fresh detection the
        # same way makes a run give the same vectors whether or not its
        # detections came from the cache: int8 models moved by up to 0.002
        # per component on the 1e-5 pixel difference.
        return face_from_row(detection_row(face)), ""

    def _store(self, sha256: str, face: Face | None, vector: np.ndarray | None, reason: str) -> None:
        if self.detections is None or self.vectors is None:
            return
        if face is not None:
            self.detections.put(sha256, detection_row(face))
        elif reason.startswith("no face found"):
            self.detections.put(sha256, None, reason)
        self.vectors.put(sha256, vector, reason)
