"""Convert the output of dlib's 5-point shape predictor to edgeface's five landmarks.

dlib's ``shape_predictor_5_face_landmarks.dat`` marks the outer and inner
corner of each eye and the base of the nose. edgeface's landmarks are the
eye centres, the nose tip and the mouth corners. Both point sets are defined
on dlib's mean face, so the similarity transform that carries dlib's 5-point
template onto the predicted points also carries the mean-face eye centres,
nose tip and mouth corners onto the face.
"""

from __future__ import annotations

import numpy as np

from .alignment import similarity_transform
from .manifest import DLIB_5_POINT_TEMPLATE, DLIB_MEAN_FACE_5


def landmarks_from_dlib5(points: np.ndarray) -> np.ndarray:
    """Return edgeface's five landmarks, ``(5, 2)`` float64 pixels, from dlib's five parts.

    ``points`` is ``(5, 2)`` in dlib's part order: the outer and inner corner
    of the eye on the image's right, the outer and inner corner of the eye on
    the image's left, the base of the nose. The result is in edgeface's order:
    image-left eye centre, image-right eye centre, nose tip, image-left mouth
    corner, image-right mouth corner. The mouth and nose tip are placed where
    dlib's mean face has them, since the predictor does not see them.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"expected dlib's 5 shape parts as a (5, 2) array, got shape {points.shape}")

    matrix = similarity_transform(np.asarray(DLIB_5_POINT_TEMPLATE), points)
    mean_face = np.asarray(DLIB_MEAN_FACE_5, dtype=np.float64)
    return mean_face @ matrix[:, :2].T + matrix[:, 2]
