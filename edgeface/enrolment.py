"""Enrolment: sync a gallery with a folder of people, one sub-folder per person.

The folder is the source of truth. People whose folder appeared are added,
people whose photos changed are re-embedded, people whose folder is gone are
removed. A photo whose content hash is unchanged reuses its stored vector, so
a sync after a small change only embeds the new photos.

A photo is used when it shows exactly one face, or one clearly dominant
face: the largest face's box area at least ``dominant_face_ratio`` times the
second largest (a person with a friend far behind them). Any other photo is
skipped with its reason, and a person left with no usable photo is not
enrolled. The gallery is written once, atomically, after every photo has been
read, so a bad photo or a crash never leaves a half-written gallery.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .detection import Face
from .errors import EdgefaceError, GalleryError, ImageError
from .gallery import Gallery
from .imageio import is_image_file, load_image
from .pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass
class PersonReport:
    """Outcome of enrolment for one person.

    ``action`` is ``added``, ``changed``, ``unchanged``, ``removed`` (folder
    gone, or no usable photo left) or ``not enrolled`` (a new person with no
    usable photo). ``skipped`` lists ``(photo, reason)``; ``warnings`` lists
    ``(photo, message)`` for photos used but worth checking.
    """

    person: str
    action: str
    used: int = 0
    embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


class NothingEnrolledError(EdgefaceError):
    """No person folder had a usable photo, so the gallery was left unchanged."""

    def __init__(self, message: str, reports: list[PersonReport]) -> None:
        super().__init__(message)
        self.reports = reports


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


def sync_gallery(
    people_dir: str | Path,
    gallery_dir: str | Path,
    pipeline: Pipeline,
    dominant_face_ratio: float,
    threshold: float | None = None,
) -> list[PersonReport]:
    """Enrol every person folder of ``people_dir`` into the gallery at ``gallery_dir``.

    Only photos directly inside a person's folder are read; sub-folders and
    hidden files are listed as skipped. With ``threshold`` (the matching
    distance), a photo farther than it from all of the person's other photos
    gets a warning, since it may show someone else.

    Returns one report per person, sorted by name, including removed people.
    Raises :class:`EdgefaceError` when ``people_dir`` or ``gallery_dir`` is
    unusable, and :class:`NothingEnrolledError` when no person has a usable
    photo. In both cases the gallery on disk is left unchanged.
    """
    people_dir = Path(people_dir)
    gallery_dir = Path(gallery_dir)
    if not people_dir.exists():
        raise EdgefaceError(f"people folder not found: {people_dir} (expected one sub-folder of photos per person)")
    if not people_dir.is_dir():
        raise EdgefaceError(f"{people_dir} is a file, not a folder: give the folder that holds one sub-folder of photos per person")
    Gallery.check_writable(gallery_dir)

    folders = sorted(p for p in people_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "lost+found")
    if not folders:
        raise EdgefaceError(f"{people_dir} has no person folders: put each person's photos in a sub-folder named after them")

    previous = _load_previous(gallery_dir, pipeline)
    gallery = pipeline.new_gallery()
    reports = []
    enrolled = {}
    for folder in folders:
        report, photos = _enrol_person(folder, previous, pipeline, dominant_face_ratio)
        if threshold is not None:
            report.warnings = _outlier_photos(photos, threshold)
        enrolled[folder.name] = photos
        reports.append(report)
    gallery.replace_people(enrolled)

    _warn_shared_photos(gallery, reports)

    names = {folder.name for folder in folders}
    if previous is not None:
        for person in previous.people:
            if person not in names:
                reports.append(PersonReport(person=person, action="removed"))
    reports.sort(key=lambda r: r.person)

    if not gallery.people:
        raise NothingEnrolledError(
            f"no person in {people_dir} has a usable photo, so the gallery at {gallery_dir} was left "
            f"unchanged: check the photos listed above",
            reports,
        )
    gallery.save(gallery_dir)
    return reports


def _warn_shared_photos(gallery: Gallery, reports: list[PersonReport]) -> None:
    """Warn when one photo file (same content) is enrolled under two or more people."""
    owners: dict[str, list[tuple[str, str]]] = {}
    for person, records in gallery.photos.items():
        for name, photo in records.items():
            owners.setdefault(photo.sha256, []).append((person, name))
    by_person = {report.person: report for report in reports}
    for shared in owners.values():
        people = sorted({person for person, _ in shared})
        if len(people) < 2:
            continue
        for person, name in shared:
            others = ", ".join(p for p in people if p != person)
            by_person[person].warnings.append((name, f"the same photo is also enrolled for {others}"))


def _outlier_photos(photos: dict[str, tuple[str, np.ndarray]], threshold: float) -> list[tuple[str, str]]:
    """Return ``(photo, message)`` for each photo farther than ``threshold`` from all the person's others."""
    if len(photos) < 2:
        return []
    names = sorted(photos)
    vectors = np.stack([photos[name][1] for name in names])
    distances = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=2)
    np.fill_diagonal(distances, np.inf)
    warnings = []
    for name, nearest in zip(names, distances.min(axis=1)):
        if nearest > threshold:
            warnings.append(
                (name, f"distance {nearest:.2f} to this person's nearest other photo is above the threshold "
                       f"{threshold:.2f}: check that it shows the same person")
            )
    return warnings


def _load_previous(gallery_dir: str | Path, pipeline: Pipeline) -> Gallery | None:
    """Return the existing gallery if it can be reused, else None (everything is embedded anew)."""
    try:
        previous = Gallery.load(gallery_dir)
    except GalleryError as error:
        if Path(gallery_dir).exists() and any(Path(gallery_dir).iterdir()):
            log.warning("rebuilding the gallery from the photos: %s", error)
        return None
    if previous.fingerprint != pipeline.fingerprint:
        log.warning(
            "gallery was built with model %s; re-embedding every photo with %s",
            previous.model_name,
            pipeline.model_name,
        )
        return previous_people_only(previous)
    return previous


def previous_people_only(previous: Gallery) -> Gallery:
    """Return an empty gallery that still lists who was enrolled, for the 'removed' report."""
    stub = Gallery(model_name=previous.model_name, fingerprint="", dim=previous.dim)
    stub.photos = {person: {} for person in previous.people}
    return stub


def _enrol_person(folder: Path, previous: Gallery | None, pipeline: Pipeline, dominant_face_ratio: float):
    person = folder.name
    report = PersonReport(person=person, action="added")
    old_photos = previous.photos.get(person) if previous is not None else None
    photos = {}

    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith("."):
            continue
        if path.is_dir():
            report.skipped.append((name + "/", "sub-folder ignored: put this person's photos directly in their folder"))
            continue
        if not path.is_file():
            report.skipped.append((name, "not a regular file (a broken link, pipe or device)"))
            continue
        if not is_image_file(path):
            report.skipped.append((name, "not an image file (unsupported extension)"))
            continue
        try:
            data = path.read_bytes()
        except OSError as error:
            report.skipped.append((name, f"cannot read: {error.strerror}"))
            continue
        digest = hashlib.sha256(data).hexdigest()

        if old_photos and name in old_photos and old_photos[name].sha256 == digest and previous.fingerprint:
            photos[name] = (digest, previous.vector_of(person, name))
            continue

        vector, reason = _embed_photo(path, pipeline, dominant_face_ratio)
        if vector is None:
            report.skipped.append((name, reason))
            log.info("person=%s photo=%s skipped: %s", person, name, reason)
            continue
        photos[name] = (digest, vector)
        report.embedded += 1

    report.used = len(photos)
    if not photos:
        report.action = "removed" if old_photos else "not enrolled"
    elif old_photos is not None:
        same = {n: p.sha256 for n, p in old_photos.items()} == {n: d for n, (d, _) in photos.items()}
        report.action = "unchanged" if same and report.embedded == 0 else "changed"
    return report, photos


def _embed_photo(path: Path, pipeline: Pipeline, dominant_face_ratio: float):
    try:
        image = load_image(path)
    except ImageError as error:
        return None, str(error)
    faces = pipeline.detect(image)
    face, reason = choose_face(faces, dominant_face_ratio)
    if face is None:
        if not faces and pipeline.min_face_size:
            reason += f" (faces smaller than {pipeline.min_face_size} px are ignored)"
        return None, reason
    return pipeline.embed(image, [face])[0], ""
