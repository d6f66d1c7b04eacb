"""The recognition pipeline: frame to faces to embeddings to named people.

:class:`Pipeline` owns one detector and one embedder, built once from the
configuration, and turns an RGB frame into a list of :class:`Identification`
values. The per-frame path only detects, crops, embeds and searches; models,
normalisation constants and the index are prepared at construction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .detection import Detector, Face, make_detector
from .embedding import Embedder
from .gallery import Gallery
from .voting import Match, VotingParams, vote

log = logging.getLogger(__name__)


@dataclass
class Identification:
    """One face in a frame and who it is."""

    face: Face
    match: Match


@dataclass
class StageTimes:
    """Milliseconds spent in each stage of one frame."""

    detect: float = 0.0
    embed: float = 0.0
    search: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"detect_ms": round(self.detect, 2), "embed_ms": round(self.embed, 2), "search_ms": round(self.search, 2)}


@dataclass
class Pipeline:
    """Detector and embedder, with the face-size rule, built from one configuration."""

    detector: Detector
    embedder: Embedder
    min_face_size: int = 0
    times: StageTimes = field(default_factory=StageTimes)

    @classmethod
    def from_config(cls, config: dict) -> Pipeline:
        embedder = Embedder(
            config["embedder"]["model"],
            threads=config["embedder"]["threads"],
            allow_untrained=config["embedder"]["allow_untrained"],
        )
        detector = make_detector(config["detector"])
        return cls(detector=detector, embedder=embedder, min_face_size=config["detector"]["min_face_size"])

    @property
    def model_name(self) -> str:
        return self.embedder.manifest.name

    @property
    def fingerprint(self) -> str:
        return self.embedder.manifest.fingerprint()

    def new_gallery(self) -> Gallery:
        """Return an empty gallery bound to this pipeline's model."""
        return Gallery(model_name=self.model_name, fingerprint=self.fingerprint, dim=self.embedder.dim)

    def load_gallery(self, folder: str | Path) -> Gallery:
        """Load a gallery and check that it was built with this pipeline's model."""
        gallery = Gallery.load(folder)
        gallery.check_model(self.model_name, self.fingerprint)
        return gallery

    def detect(self, image: np.ndarray, bgr: np.ndarray | None = None) -> list[Face]:
        """Return the faces of an RGB frame at least ``min_face_size`` pixels on their shorter side.

        ``bgr`` is the same frame in BGR order, when the caller has it (see :class:`Detector`).
        """
        start = time.perf_counter()
        faces = self.detector.detect(image, bgr)
        self.times.detect = (time.perf_counter() - start) * 1000.0

        large_enough = [face for face in faces if min(face.box[2], face.box[3]) >= self.min_face_size]
        if len(large_enough) < len(faces):
            log.debug("dropped %d faces smaller than %d px", len(faces) - len(large_enough), self.min_face_size)
        return large_enough

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Return one unit vector per face, as an ``(n, dim)`` array."""
        start = time.perf_counter()
        crops = [self.embedder.crop(image, face.landmarks, face.box) for face in faces]
        vectors = self.embedder.embed_crops(crops)
        self.times.embed = (time.perf_counter() - start) * 1000.0
        return vectors

    def identify(self, image: np.ndarray, gallery: Gallery, params: VotingParams) -> list[Identification]:
        """Detect, embed and name every face of an RGB frame, largest face first."""
        self.times = StageTimes()
        faces = self.detect(image)
        if not faces:
            return []
        vectors = self.embed(image, faces)

        start = time.perf_counter()
        distances, people = gallery.search(vectors, params.k2)
        results = [
            Identification(face=face, match=vote(people[i], distances[i], params))
            for i, face in enumerate(faces)
        ]
        self.times.search = (time.perf_counter() - start) * 1000.0
        return results
