"""Enrolment photos: reading them safely and the quality gate each must pass.

A photo is read only when it is a regular file of at most
``max_file_bytes``, inside the source folder (symbolic links that lead out are
rejected). Its format is detected from the content. It is used when it shows
exactly one face, or one clearly dominant face, whose eyes are at least
``min_eye_distance`` pixels apart and whose aligned crop is at least
``min_sharpness`` sharp. Hidden files, AppleDouble files and the files that
operating systems leave on USB sticks are ignored, never read.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import cv2

from .detection import Face
from .errors import DetectorError, ImageError, ModelError
from .imageio import DEFAULT_MAX_PIXELS, decode_image
from .pipeline import Pipeline
from .quality import eye_distance, sharpness

log = logging.getLogger(__name__)

# Names that operating systems and photo tools leave in folders; compared in
# lower case. Names starting with "." (.DS_Store, ._IMG_1.JPG, .Trashes) are
# ignored as hidden files.
SYSTEM_NAMES = frozenset(
    {"thumbs.db", "ehthumbs.db", "desktop.ini", "system volume information", "$recycle.bin", "lost+found", "icon\r"}
)

@dataclass(frozen=True)
class EnrolmentRules:
    """Conditions that a photo must meet to be enrolled.

    :param dominant_face_ratio: a photo with several faces is used when the
        largest face's box area is at least this many times the next one's.
    :param min_eye_distance: minimum distance between the eye centres, in
        pixels of the photo.
    :param min_sharpness: minimum sharpness of the face, as the door
        measures it (:func:`edgeface.quality.sharpness`). The default 12
        passed every one of 129 LFW and knn-examples photos (lowest 14.6,
        median about 130, with YuNet and dlib boxes). After a Gaussian blur
        of sigma 3 pixels the median was 9 to 11, and of sigma 5 about 5.
    :param max_file_bytes: larger files are skipped without being read.
    :param max_pixels: larger images are skipped before they are decoded.
    :param match_threshold: the matching distance. With it, a new photo
        nearer than this to another person than to its own folder is skipped
        as a likely mix-up, and a photo farther than this from all the
        person's other photos gets a warning. None turns both checks off.
    :param keep_photos: keep a copy of every enrolled photo in the gallery
        folder. Off by default, so the gallery holds only vectors and hashes.
    """

    dominant_face_ratio: float = 2.0
    min_eye_distance: float = 25.0
    min_sharpness: float = 12.0
    max_file_bytes: int = 30 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    match_threshold: float | None = None
    keep_photos: bool = False

    @classmethod
    def from_config(cls, config: dict) -> EnrolmentRules:
        """Build the rules from a validated configuration (the enrolment and matching sections)."""
        enrolment = config["enrolment"]
        return cls(
            dominant_face_ratio=enrolment["dominant_face_ratio"],
            min_eye_distance=enrolment["min_eye_distance"],
            min_sharpness=enrolment["min_sharpness"],
            max_file_bytes=int(enrolment["max_file_mb"] * 1024 * 1024),
            max_pixels=enrolment["max_pixels"],
            match_threshold=config["matching"]["threshold"],
            keep_photos=enrolment["keep_photos"],
        )


def choose_face(faces: list[Face], dominant_face_ratio: float) -> tuple[Face | None, str]:
    """Return the face to enrol from a photo's faces, or None and the reason to skip it.

    ``faces`` must be sorted largest first, as every detector returns them.
    """
    if not faces:
        return None, "no face found"
    if len(faces) == 1:
        return faces[0], ""
    ratio = faces[0].area / max(faces[1].area, 1e-9)
    if ratio >= dominant_face_ratio:
        return faces[0], ""
    return None, (
        f"{len(faces)} faces and none dominant (largest is {ratio:.1f}x the next, "
        f"needs {dominant_face_ratio:g}x): use a photo of this person alone"
    )


def ignored_reason(name: str) -> str:
    """Return why a file or folder name is ignored, or "" when it is not."""
    if name.startswith("._"):
        return "AppleDouble file (macOS metadata)"
    if name.startswith("."):
        return "hidden file"
    if name.lower() in SYSTEM_NAMES:
        return "system file"
    return ""


def read_photo(path: Path, root: Path, rules: EnrolmentRules) -> tuple[bytes | None, str]:
    """Return the bytes of a photo file, or None and the reason it cannot be used.

    ``root`` is the folder that a symbolic link must lead into. Reasons for
    files that cannot be read start with "cannot read".
    """
    try:
        link = path.is_symlink()
        real = Path(os.path.realpath(path))
        if link and not is_inside(real, root):
            return None, "symbolic link that leads out of the stick: copy the photo itself"
        mode = os.stat(real).st_mode
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    if stat.S_ISDIR(mode):
        return None, "sub-folder ignored: put this person's photos directly in their folder"
    if not stat.S_ISREG(mode):
        return None, "not a regular file (a pipe, device or socket)"

    try:
        # O_NOFOLLOW: the checked path has no link left, so a link swapped in now fails to open.
        descriptor = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None, "not a regular file (a pipe, device or socket)"
            if size == 0:
                return None, "the file is empty (0 bytes): copy it again from its source"
            if size > rules.max_file_bytes:
                return None, (
                    f"the file is {size / 1048576:.1f} MB, over the limit of {rules.max_file_bytes / 1048576:g} MB "
                    f"(enrolment.max_file_mb): save a smaller copy of the photo"
                )
            data = handle.read(rules.max_file_bytes + 1)
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    if len(data) > rules.max_file_bytes:
        return None, f"the file grew over the limit of {rules.max_file_bytes / 1048576:g} MB while it was read"
    return data, ""


def embed_photo(data: bytes, path: Path, pipeline: Pipeline, rules: EnrolmentRules):
    """Decode, detect, check and embed one photo's face.

    Returns ``((vector, eye distance, sharpness), "")`` for a usable photo,
    or ``(None, reason)``.
    """
    try:
        image = decode_image(data, path, rules.max_pixels)
    except ImageError as error:
        return None, _short_image_reason(str(error), path)
    except Exception as error:  # a decoder plugin (pillow-heif) may raise its own types
        log.exception("decoding %s failed", path)
        return None, f"decoding the image failed ({type(error).__name__}: {error}): convert the file to JPEG or PNG"
    try:
        faces = pipeline.detect(image)
    except (DetectorError, cv2.error) as error:
        return None, f"face detection failed on this image: {error}"
    face, reason = choose_face(faces, rules.dominant_face_ratio)
    if face is None:
        if not faces and pipeline.min_face_size:
            reason += f" (faces smaller than {pipeline.min_face_size} px are ignored)"
        return None, reason

    eyes = eye_distance(face)
    sharp = sharpness(image, face)
    log.debug("photo=%s eye_distance=%.1f sharpness=%.1f", path.name, eyes, sharp)
    reason = quality_reason(eyes, sharp, rules)
    if reason:
        return None, reason
    try:
        vector = pipeline.embed(image, [face])[0]
    except (ModelError, cv2.error) as error:
        return None, f"the embedding model failed on this face: {error}"
    return (vector, eyes, sharp), ""


def quality_reason(eyes: float | None, sharp: float | None, rules: EnrolmentRules) -> str:
    """Return why a face's measurements fail the rules, or ""; unknown measurements pass."""
    if eyes is not None and eyes < rules.min_eye_distance:
        return (
            f"face too small: eyes {eyes:.0f} px apart, needs {rules.min_eye_distance:g} "
            f"(enrolment.min_eye_distance): use a closer or larger photo"
        )
    if sharp is not None and sharp < rules.min_sharpness:
        return (
            f"face too blurry: sharpness {sharp:.1f}, needs {rules.min_sharpness:g} "
            f"(enrolment.min_sharpness): use a sharper photo"
        )
    return ""


def _short_image_reason(message: str, path: Path) -> str:
    """Drop the "cannot load image 'path':" prefix, since the report already names the file."""
    prefix = f"cannot load image {str(path)!r}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def is_inside(path: Path, root: Path) -> bool:
    """Return True when ``path`` is ``root`` or below it; both must be resolved (no links, no "..")."""
    return path == root or root in path.parents
