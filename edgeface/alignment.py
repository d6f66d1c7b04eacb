"""Face alignment: cut a face out of a frame the way the embedder expects.

Two methods, chosen by the model manifest's ``crop`` section:

- ``align``: the least-squares similarity transform (rotation, uniform scale,
  translation; Umeyama's method, as dlib's ``find_similarity_transform``)
  that maps the detector's five landmarks onto the manifest's template
  points, then one bilinear or bicubic warp into the model's input size.
- ``box``: a square centred on the detector's box, ``box_scale`` times its
  longer side, resized to the input size. Parts outside the frame are black.
"""

from __future__ import annotations

import cv2
import numpy as np

from .manifest import CropSpec

_INTERPOLATION = {
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Return the 2x3 similarity matrix that best maps ``source`` points onto ``target``.

    Both arrays are ``(n, 2)`` with ``n >= 2``; the fit minimises the sum of
    squared distances (Umeyama, 1991), reflections excluded.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)

    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=0)
    source_centred = source - source_mean
    target_centred = target - target_mean

    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt

    variance = (source_centred**2).sum() / len(source)
    scale = (singular * np.diag(sign)).sum() / variance if variance > 0 else 1.0

    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def crop_matrix(
    landmarks: np.ndarray | None,
    box: tuple[float, float, float, float],
    crop: CropSpec,
    width: int,
    height: int,
) -> np.ndarray:
    """Return the 2x3 matrix that maps frame pixels to model-input pixels.

    ``box`` is ``(x, y, w, h)`` in frame pixels and ``landmarks`` is ``(5, 2)``
    in edgeface's landmark order; only the one the method needs is used.
    """
    if crop.method == "align":
        if landmarks is None:
            raise ValueError("alignment needs five landmarks")
        return similarity_transform(np.asarray(landmarks), np.asarray(crop.points))

    x, y, w, h = box
    side = crop.box_scale * max(w, h)
    scale_x = width / side
    scale_y = height / side
    centre_x = x + w / 2.0
    centre_y = y + h / 2.0
    return np.array(
        [
            [scale_x, 0.0, width / 2.0 - scale_x * centre_x],
            [0.0, scale_y, height / 2.0 - scale_y * centre_y],
        ]
    )


def crop_face(
    image: np.ndarray,
    landmarks: np.ndarray | None,
    box: tuple[float, float, float, float],
    crop: CropSpec,
    width: int,
    height: int,
) -> np.ndarray:
    """Return the face as a ``height x width x 3`` uint8 image in the frame's colour order."""
    matrix = crop_matrix(landmarks, box, crop, width, height)
    interpolation = _INTERPOLATION[crop.interpolation]

    # A large downscale aliases with a plain warp: shrink the frame first so
    # the warp scales by at most 2, as dlib's chip extraction does with its
    # image pyramid.
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        factor = 0.5 / scale
        small = cv2.resize(image, None, fx=1.0 / factor, fy=1.0 / factor, interpolation=cv2.INTER_AREA)
        # Pixel centres: frame x + 0.5 = (small x + 0.5) * fx.
        fx = image.shape[1] / small.shape[1]
        fy = image.shape[0] / small.shape[0]
        small_to_frame = np.array(
            [[fx, 0.0, 0.5 * (fx - 1.0)], [0.0, fy, 0.5 * (fy - 1.0)], [0.0, 0.0, 1.0]]
        )
        matrix = matrix @ small_to_frame
        image = small

    return cv2.warpAffine(
        image,
        matrix,
        (width, height),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
