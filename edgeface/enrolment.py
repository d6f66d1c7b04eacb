"""Enrolment: sync a gallery with a folder of people, one sub-folder per person.

The folder is the source of truth. People whose folder appeared are added,
people whose photos changed are re-embedded, people whose folder is gone are
removed. A photo whose content hash is unchanged reuses its stored vector, so
a sync after a small change only embeds the new photos.

Every photo passes the quality gate of :mod:`edgeface.photos` (size, format,
one face, face size, sharpness) and one check across people: a new photo
nearer to another person than to its own folder is a likely mix-up. Any other
photo is skipped with its reason, and a person left with no usable photo is
not enrolled.

Folder names are people's names. The gallery keys them by their Unicode NFC
form, so a name typed on a Mac (NFD) and on Linux or Windows (NFC) is one
person, and keeps the name as written for display. An optional
``person.yaml`` in the folder sets access options (see :mod:`edgeface.people`).

The gallery is written once, atomically, after every photo has been read, so
a bad photo or a crash never leaves a half-written gallery. A sync that would
remove every enrolled person is refused unless the caller allows it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgefaceError, GalleryError
from .gallery import GALLERY_FILE, Gallery, locked, prune_photos, store_photo
from .people import OPTIONS_FILE, PersonOptions, PersonOptionsError, parse_options
from .photos import EnrolmentRules, choose_face, embed_photo, ignored_reason, is_inside, quality_reason, read_photo
from .pipeline import Pipeline

__all__ = ["EnrolmentResult", "EnrolmentRules", "NothingEnrolledError", "PersonReport", "RemoveEveryoneError", "choose_face", "sync_gallery"]

log = logging.getLogger(__name__)

_MAX_OPTIONS_BYTES = 64 * 1024

@dataclass
class PersonReport:
    """Outcome of enrolment for one person.

    ``person`` is the gallery key (the NFC form of the folder name) and
    ``display_name`` the name as written. ``action`` is ``added``,
    ``changed``, ``unchanged``, ``kept`` (the folder's person.yaml is invalid
    or the folder cannot be read, so the person stays as enrolled before), ``removed`` (folder gone, or no
    usable photo left) or ``not enrolled`` (a new person with no usable
    photo). ``photos`` maps each used photo to ``embedded``, ``unchanged`` or
    ``kept`` (unreadable now, so its earlier vector is kept). ``skipped``
    lists ``(photo, reason)``, ``ignored`` ``(file, reason)`` for hidden and
    system files, and ``warnings`` ``(photo, message)`` for photos used but
    worth checking.
    """

    person: str
    action: str
    display_name: str = ""
    used: int = 0
    embedded: int = 0
    photos: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    options: PersonOptions | None = None
    options_error: str = ""
    error: str = ""

    def __post_init__(self) -> None:
        if not self.display_name:
            self.display_name = self.person


@dataclass
class EnrolmentResult:
    """Outcome of one sync: a report per person and the entries of the people folder that are not people."""

    people: list[PersonReport]
    entries: list[tuple[str, str, str]] = field(default_factory=list)
    saved: bool = False
    removed_everyone: bool = False

    def person(self, name: str) -> PersonReport:
        """Return the report of one person, by name as written or by its NFC key."""
        key = unicodedata.normalize("NFC", name)
        for report in self.people:
            if report.person == key:
                return report
        raise KeyError(name)


class NothingEnrolledError(EdgefaceError):
    """No person folder had a usable photo, so the gallery was left unchanged."""

    def __init__(self, message: str, result: EnrolmentResult) -> None:
        super().__init__(message)
        self.result = result
        self.reports = result.people


class RemoveEveryoneError(NothingEnrolledError):
    """The sync would remove every enrolled person and the caller did not allow it."""


def person_key(name: str) -> tuple[str, str]:
    """Return the gallery key (NFC) of a folder name, or "" and the reason the name is unusable."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "", "the folder name is not valid UTF-8: rename the folder on a computer"
    if not name.strip():
        return "", "the folder name is blank: name the folder after the person"
    # Only control characters (Cc): format characters such as ZWNJ belong in some names.
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "", "the folder name contains control characters: rename the folder"
    return unicodedata.normalize("NFC", name), ""


def sync_gallery(
    people_dir: str | Path,
    gallery_dir: str | Path,
    pipeline: Pipeline,
    rules: EnrolmentRules | float | None = None,
    *,
    threshold: float | None = None,
    root: str | Path | None = None,
    allow_remove_everyone: bool = False,
) -> EnrolmentResult:
    """Enrol every person folder of ``people_dir`` into the gallery at ``gallery_dir``.

    Only photos directly inside a person's folder are read; sub-folders are
    listed as skipped. ``root`` (default ``people_dir``) is the folder that
    symbolic links must stay inside, such as the mount point of a USB stick.
    ``rules`` may also be a number, the dominant face ratio, with the
    matching ``threshold`` beside it and the other rules at their defaults.

    Returns the result with one report per person, sorted by name ignoring case, including
    removed people. Raises :class:`EdgefaceError` when ``people_dir`` or
    ``gallery_dir`` is unusable, :class:`NothingEnrolledError` when no person
    has a usable photo, and :class:`RemoveEveryoneError` when the gallery
    would lose every enrolled person and ``allow_remove_everyone`` is False.
    In each case the gallery on disk is left unchanged.
    """
    if rules is None:
        rules = EnrolmentRules(match_threshold=threshold)
    elif isinstance(rules, (int, float)):
        rules = EnrolmentRules(dominant_face_ratio=float(rules), match_threshold=threshold)
    people_dir = Path(people_dir)
    gallery_dir = Path(gallery_dir)
    if not people_dir.exists():
        raise EdgefaceError(f"people folder not found: {people_dir} (expected one sub-folder of photos per person)")
    if not people_dir.is_dir():
        raise EdgefaceError(f"{people_dir} is a file, not a folder: give the folder that holds one sub-folder of photos per person")
    root = Path(os.path.realpath(root if root is not None else people_dir))
    if not is_inside(Path(os.path.realpath(people_dir)), root):
        raise EdgefaceError(f"{people_dir} is a symbolic link that leads out of {root}: put the people folder itself there")
    Gallery.check_writable(gallery_dir)
    with locked(gallery_dir):
        return _sync_locked(people_dir, gallery_dir, pipeline, rules, root, allow_remove_everyone)


def _sync_locked(people_dir, gallery_dir, pipeline, rules, root, allow_remove_everyone) -> EnrolmentResult:
    result = EnrolmentResult(people=[])
    folders = _person_folders(people_dir, root, result)
    if not folders and not allow_remove_everyone:
        raise EdgefaceError(f"{people_dir} has no person folders: put each person's photos in a sub-folder named after them")

    previous = _load_previous(gallery_dir, pipeline)
    enrolled, new_photos = _read_people(folders, root, previous, pipeline, rules, gallery_dir, result)
    if rules.match_threshold is not None:
        _skip_mixups(enrolled, new_photos, rules.match_threshold, result)
        for report in result.people:
            if report.person in enrolled and report.action != "kept":
                report.warnings.extend(_outlier_photos(enrolled[report.person], rules.match_threshold))
    for report in result.people:
        _settle_action(report, previous, enrolled)

    gallery = pipeline.new_gallery()
    gallery.replace_people(enrolled)
    for report in result.people:
        if report.person in gallery.photos:
            gallery.set_details(report.person, report.display_name, report.options or PersonOptions())
    _warn_shared_photos(gallery, result.people)

    if previous is not None:
        reported = {report.person for report in result.people}
        for person in previous.people:
            if person not in reported:
                result.people.append(PersonReport(person=person, action="removed", display_name=previous.display_name(person)))
    result.people.sort(key=lambda r: (r.person.casefold(), r.person))

    if not gallery.people:
        _refuse_empty_gallery(people_dir, gallery_dir, previous, allow_remove_everyone, result)
        result.removed_everyone = True
    gallery.save(gallery_dir)
    result.saved = True

    kept = {photo.sha256 for records in gallery.photos.values() for photo in records.values()} if rules.keep_photos else set()
    prune_photos(gallery_dir, kept)
    return result


def _refuse_empty_gallery(people_dir, gallery_dir, previous, allow_remove_everyone, result) -> None:
    """Raise unless an empty gallery is what the caller asked for."""
    had_people = previous is not None and bool(previous.people)
    if not had_people:
        raise NothingEnrolledError(
            f"no person in {people_dir} has a usable photo, so the gallery at {gallery_dir} was left "
            f"unchanged: check the skipped photos listed in the report",
            result,
        )
    if not allow_remove_everyone:
        raise RemoveEveryoneError(
            f"this sync would remove every enrolled person ({len(previous.people)}) because no person in "
            f"{people_dir} has a usable photo, so the gallery at {gallery_dir} was left unchanged. If that "
            f"is what you want, put an empty file named REMOVE-EVERYONE in the stick's edgeface folder, "
            f"or run edgeface sync with --remove-everyone",
            result,
        )
    log.warning("removing every enrolled person (%d) from %s, as requested", len(previous.people), gallery_dir)


def _person_folders(people_dir: Path, root: Path, result: EnrolmentResult) -> dict[str, list[tuple[Path, str]]]:
    """Return ``{person key: [(folder, name as written), ...]}``; other entries go to ``result.entries``."""
    folders: dict[str, list[tuple[Path, str]]] = {}
    try:
        entries = sorted(people_dir.iterdir())
    except OSError as error:
        raise EdgefaceError(f"cannot read the people folder {people_dir}: {error.strerror or error}") from error
    for path in entries:
        name = path.name
        reason = ignored_reason(name)
        if reason:
            result.entries.append((name, "ignored", reason))
            continue
        if path.is_symlink() and not is_inside(Path(os.path.realpath(path)), root):
            result.entries.append((name, "skipped", "symbolic link that leads out of the stick: copy the folder itself"))
            continue
        if not path.is_dir():
            result.entries.append((name, "skipped", "not a folder: put photos in a folder named after the person"))
            continue
        key, reason = person_key(name)
        if not key:
            result.entries.append((name, "skipped", reason))
            continue
        folders.setdefault(key, []).append((path, name))
    return folders


def _read_people(folders, root, previous, pipeline, rules, gallery_dir, result):
    """Read and embed every person's photos; return their photo maps and the (person, photo) pairs embedded now."""
    enrolled: dict[str, dict[str, tuple]] = {}
    new_photos: list[tuple[str, str]] = []
    for key, spellings in folders.items():
        display_name = spellings[0][1]
        report = PersonReport(person=key, action="added", display_name=display_name)
        result.people.append(report)

        options = _read_options(spellings, report)
        if report.options_error:
            _keep_as_before(report, previous, enrolled)
            continue
        report.options = options

        photos: dict[str, tuple] = {}
        try:
            for folder, _ in spellings:
                _read_folder(folder, key, root, previous, pipeline, rules, gallery_dir, report, photos)
        except OSError as error:
            # A folder that cannot be listed (a stick pulled out, a failing
            # card) does not mean that its photos were removed.
            report.error = f"the folder cannot be read: {error.strerror or error}"
            log.warning("person=%s %s; person kept as before", key, report.error)
            report.photos.clear()
            report.embedded = 0
            _keep_as_before(report, previous, enrolled)
            continue
        enrolled[key] = photos
        new_photos.extend((key, name) for name, status in report.photos.items() if status == "embedded")
    return enrolled, new_photos


def _keep_as_before(report: PersonReport, previous: Gallery | None, enrolled) -> None:
    """Keep a person whose folder could not be used exactly as enrolled before, or leave a new person out."""
    if previous is None or report.person not in previous.photos or not previous.fingerprint:
        # NOTE: after a model change the old vectors cannot be kept, so the person is left out.
        report.action = "not enrolled"
        return
    report.action = "kept"
    report.options = previous.options_of(report.person)
    report.display_name = previous.display_name(report.person)
    enrolled[report.person] = {name: _previous_photo(previous, report.person, name) for name in previous.photos[report.person]}
    report.photos = {name: "kept" for name in enrolled[report.person]}


def _read_options(spellings: list[tuple[Path, str]], report: PersonReport) -> PersonOptions:
    """Return the person's options from person.yaml, or the default; record an invalid file in the report."""
    files = [folder / OPTIONS_FILE for folder, _ in spellings if (folder / OPTIONS_FILE).exists()]
    if not files:
        return PersonOptions()
    if len(files) > 1:
        report.options_error = f"{len(files)} folders spell this name and each has a {OPTIONS_FILE}: keep one"
        return PersonOptions()
    path = files[0]
    try:
        if not path.is_file() or path.is_symlink():
            raise PersonOptionsError(f"{OPTIONS_FILE} is not a regular file")
        if path.stat().st_size > _MAX_OPTIONS_BYTES:
            raise PersonOptionsError(f"{OPTIONS_FILE} is larger than {_MAX_OPTIONS_BYTES // 1024} KB")
        text = path.read_text(encoding="utf-8")
        return parse_options(text, OPTIONS_FILE)
    except PersonOptionsError as error:
        report.options_error = str(error)
    except UnicodeDecodeError as error:
        report.options_error = f"{OPTIONS_FILE} is not UTF-8 text (byte {error.start}): save it as UTF-8"
    except OSError as error:
        report.options_error = f"cannot read {OPTIONS_FILE}: {error.strerror or error}"
    log.warning("person=%s person.yaml invalid, so the enrolment of this person is left as it was: %s", report.person, report.options_error)
    return PersonOptions()


def _read_folder(folder, person, root, previous, pipeline, rules, gallery_dir, report, photos) -> None:
    """Add the usable photos of one folder to ``photos`` (name to (sha256, vector, eye distance, sharpness))."""
    old_photos = previous.photos.get(person) if previous is not None else None
    for path in sorted(folder.iterdir()):
        name = unicodedata.normalize("NFC", path.name)
        if path.name == OPTIONS_FILE:
            continue
        reason = ignored_reason(path.name)
        if reason:
            report.ignored.append((path.name, reason))
            continue
        if name in photos:
            report.skipped.append(
                (path.name, "another photo of this person has the same name (in another folder or Unicode spelling): rename one")
            )
            continue
        if path.is_dir() and not path.is_symlink():
            report.skipped.append((path.name + "/", "sub-folder ignored: put this person's photos directly in their folder"))
            continue

        data, reason = read_photo(path, root, rules)
        if data is None:
            if reason.startswith("cannot read") and old_photos and name in old_photos and previous.fingerprint:
                # A read error is not a removal: keep the vector of the photo enrolled under this name.
                photos[name] = _previous_photo(previous, person, name)
                report.photos[name] = "kept"
                report.warnings.append((name, f"{reason}; its earlier version stays enrolled"))
                continue
            report.skipped.append((path.name, reason))
            log.info("person=%s photo=%s skipped: %s", person, name, reason)
            continue
        digest = hashlib.sha256(data).hexdigest()

        old = old_photos.get(name) if old_photos else None
        if old is not None and old.sha256 == digest and previous.fingerprint:
            reason = quality_reason(old.eye_distance, old.sharpness, rules)
            if reason:
                report.skipped.append((path.name, reason))
                continue
            photos[name] = _previous_photo(previous, person, name)
            report.photos[name] = "unchanged"
        else:
            embedded, reason = embed_photo(data, path, pipeline, rules)
            if embedded is None:
                report.skipped.append((path.name, reason))
                log.info("person=%s photo=%s skipped: %s", person, name, reason)
                continue
            photos[name] = (digest, *embedded)
            report.photos[name] = "embedded"
            report.embedded += 1

        if rules.keep_photos:
            try:
                store_photo(gallery_dir, digest, data)
            except OSError as error:
                raise GalleryError(
                    f"cannot keep a copy of {path} in {gallery_dir}: {error.strerror or error}. The gallery is "
                    f"unchanged; free space there or set enrolment.keep_photos to false."
                ) from error


def _skip_mixups(enrolled, new_photos, threshold: float, result: EnrolmentResult) -> None:
    """Skip each new photo nearer to another person than to its own person's other photos.

    Only photos embedded in this sync are judged, against every other photo
    of the new gallery, so a wrongly filed new photo never pushes out a
    person who was already enrolled. All photos are judged before any is
    removed, so the outcome does not depend on the order of the folders.
    """
    if not new_photos:
        return
    owners = [(person, name) for person, photos in enrolled.items() for name in photos]
    if len(owners) < 2:
        return
    vectors = np.stack([np.asarray(enrolled[person][name][1], dtype=np.float32) for person, name in owners])
    people = np.array([person for person, _ in owners], dtype=object)
    index = {owner: i for i, owner in enumerate(owners)}
    reports = {report.person: report for report in result.people}

    flagged = []
    for person, name in new_photos:
        row = index[(person, name)]
        distances = np.linalg.norm(vectors - vectors[row], axis=1)
        distances[row] = np.inf
        own = people == person
        nearest_own = float(distances[own].min()) if own.sum() > 1 else float("inf")
        others = ~own
        if not others.any():
            continue
        nearest = int(np.argmin(np.where(others, distances, np.inf)))
        nearest_other = float(distances[nearest])
        if nearest_other <= threshold and nearest_other < nearest_own:
            flagged.append((person, name, people[nearest], nearest_other, nearest_own))

    for person, name, other, distance, own_distance in flagged:
        other_name = reports[other].display_name
        own_text = f"{own_distance:.2f}" if np.isfinite(own_distance) else "none, it is the only photo"
        if distance < 1e-3:
            reason = (
                f"likely mix-up: {other_name}'s folder has the same face in the same photo: keep the photo only "
                f"in the folder of the person it shows"
            )
        else:
            reason = (
                f"likely mix-up: the face is nearer to {other_name} (distance {distance:.2f}) than to this "
                f"person's other photos ({own_text}): check that the photo is in the right folder"
            )
        del enrolled[person][name]
        report = reports[person]
        del report.photos[name]
        report.embedded -= 1
        report.skipped.append((name, reason))
        log.warning("person=%s photo=%s skipped: %s", person, name, reason)


def _settle_action(report: PersonReport, previous: Gallery | None, enrolled) -> None:
    """Set the final action and photo count of a person once every check has run."""
    if report.action in ("kept", "not enrolled") and report.person not in enrolled:
        return
    photos = enrolled.get(report.person, {})
    report.used = len(photos)
    if report.action == "kept":
        return
    old_photos = previous.photos.get(report.person) if previous is not None else None
    if not photos:
        report.action = "removed" if old_photos is not None else "not enrolled"
        enrolled[report.person] = {}
        return
    if old_photos is None:
        report.action = "added"
        return
    same_photos = {n: p.sha256 for n, p in old_photos.items()} == {n: p[0] for n, p in photos.items()}
    same_details = (
        previous.options_of(report.person) == (report.options or PersonOptions())
        and previous.display_name(report.person) == report.display_name
    )
    report.action = "unchanged" if same_photos and same_details and report.embedded == 0 else "changed"


def _previous_photo(previous: Gallery, person: str, name: str) -> tuple:
    record = previous.photos[person][name]
    return record.sha256, previous.vector_of(person, name), record.eye_distance, record.sharpness


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
            others = ", ".join(gallery.display_name(p) for p in people if p != person)
            by_person[person].warnings.append((name, f"the same photo is also enrolled for {others}"))


def _outlier_photos(photos: dict[str, tuple], threshold: float) -> list[tuple[str, str]]:
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
        if (Path(gallery_dir) / GALLERY_FILE).exists():
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
    """Return a gallery without vectors that still lists who was enrolled, with their names and options.

    Its empty fingerprint tells enrolment that no stored vector can be reused.
    """
    stub = Gallery(model_name=previous.model_name, fingerprint="", dim=previous.dim)
    stub.photos = {person: {} for person in previous.people}
    stub.display_names = dict(previous.display_names)
    stub.options = dict(previous.options)
    return stub
