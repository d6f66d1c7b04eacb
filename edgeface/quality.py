"""Whether a detected face is good enough to judge: size and sharpness.

Both measures are cheap and run before the embedder, so small or blurred
faces cost no inference and cast no vote.

- Eye distance: pixels between the two eye landmarks. Recognition needs
  roughly 30 or more; faces far from the camera fall below.
- Sharpness: the variance of the Laplacian of the face's grey crop, scaled
  to a fixed size first so that the value does not depend on how large the
  face is in the frame. Motion blur and focus blur lower it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .detection import Face

#: Side in pixels of the square grey crop whose Laplacian is measured.
SHARPNESS_SIZE = 96


def eye_distance(face: Face) -> float:
    """Return the distance in pixels between the two eye landmarks."""
    left, right = face.landmarks[0], face.landmarks[1]
    return float(np.hypot(*(right - left)))


def sharpness(image: np.ndarray, face: Face) -> float:
    """Return the variance of the Laplacian of the face box, grey, at ``SHARPNESS_SIZE`` pixels.

    ``image`` is an RGB or BGR uint8 frame (the grey value is nearly the same
    either way). A box that lies outside the frame has sharpness 0.
    """
    height, width = image.shape[:2]
    x, y, w, h = face.box
    x0, y0 = max(int(x), 0), max(int(y), 0)
    x1, y1 = min(int(x + w), width), min(int(y + h), height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    crop = image[y0:y1, x0:x1]
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    grey = cv2.resize(grey, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
