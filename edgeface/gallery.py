"""The gallery: enrolled people, their photos and vectors, and the FAISS index.

A gallery lives in one folder as one file, ``gallery.npz``, holding the
metadata as JSON (people with their display names and access options, the
sha256 and quality measurements of each source photo, the model's name and
fingerprint) and the serialised FAISS index. The photos themselves are kept
only when ``enrolment.keep_photos`` is set. Then they are stored by content
hash in ``photos/`` beside the file. Saving writes a temporary
file, fsyncs it, renames it over the old one and fsyncs the folder, so a crash
at any moment leaves either the old gallery or the new one, never a mix.

Vectors are unit length and searched by inner product
(``faiss.IndexFlatIP``); the search converts similarities to Euclidean
distances, ``d = sqrt(2 - 2 * cos)``, before any threshold is applied.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from .errors import GalleryError, ModelMismatchError
from .lockfile import try_lock
from .people import DEFAULT_OPTIONS, PersonOptions, PersonOptionsError

log = logging.getLogger(__name__)

GALLERY_FILE = "gallery.npz"
LOCK_FILE = ".lock"
PHOTOS_FOLDER = "photos"
# Version 2 adds display names, person options and photo quality values.
# Version 1 files still load, with default options.
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@dataclass
class Photo:
    """One enrolled photo: its content hash, the row of its vector and its measured quality.

    ``eye_distance`` is in pixels of the photo and ``sharpness`` is the
    enrolment quality measure. Both are None in galleries written before they
    were recorded.
    """

    sha256: str
    row: int
    eye_distance: float | None = None
    sharpness: float | None = None


@dataclass
class Gallery:
    """Enrolled people and their unit vectors, searchable by Euclidean distance.

    ``labels[i]`` is the person of vector row ``i``; ``photos[person]`` maps
    each photo's file name to its record. People are keyed by the NFC form
    of their name. ``display_names`` and ``options`` hold entries only for
    people whose name is written differently or whose options are not the
    default.
    """

    model_name: str
    fingerprint: str
    dim: int
    labels: list[str] = field(default_factory=list)
    photos: dict[str, dict[str, Photo]] = field(default_factory=dict)
    vectors: np.ndarray | None = None
    display_names: dict[str, str] = field(default_factory=dict)
    options: dict[str, PersonOptions] = field(default_factory=dict)
    _index: faiss.Index | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.vectors is None:
            self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._rebuild_index()

    @property
    def people(self) -> list[str]:
        """Enrolled people, sorted by name."""
        return sorted(self.photos)

    def __len__(self) -> int:
        return len(self.labels)

    def options_of(self, person: str) -> PersonOptions:
        """Return the access options of ``person``: enabled at all times unless their person.yaml sets other options."""
        return self.options.get(person, DEFAULT_OPTIONS)

    def display_name(self, person: str) -> str:
        """Return the name as written on the enrolment stick (the key is its NFC form)."""
        return self.display_names.get(person, person)

    def set_details(self, person: str, display_name: str, options: PersonOptions) -> None:
        """Record how a person's name is written and their access options."""
        if display_name != person:
            self.display_names[person] = display_name
        else:
            self.display_names.pop(person, None)
        if options.is_default:
            self.options.pop(person, None)
        else:
            self.options[person] = options

    def check_model(self, model_name: str, fingerprint: str) -> None:
        """Raise :class:`ModelMismatchError` unless the gallery was built with this model."""
        if fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"the gallery was built with model {self.model_name} (fingerprint {self.fingerprint}), "
                f"but the current model is {model_name} (fingerprint {fingerprint}). Vectors of "
                f"different models cannot be compared: enrol again with the current model, or "
                f"configure the gallery's model."
            )

    def replace_person(self, person: str, photos: dict[str, tuple[str, np.ndarray]]) -> None:
        """Set a person's photos, replacing any they had; ``photos`` maps name to (sha256, vector)."""
        self.replace_people({person: photos})

    def replace_people(self, people: dict[str, dict[str, tuple]]) -> None:
        """Set the photos of several people at once, with one copy of the vectors and one index build.

        ``people`` maps each person to ``{photo name: (sha256, vector)}`` or
        ``{photo name: (sha256, vector, eye_distance, sharpness)}``. A person
        given no photos is removed, with their display name and options.
        """
        keep = [i for i, label in enumerate(self.labels) if label not in people]
        for person, photos in people.items():
            self.photos.pop(person, None)
            if not photos:
                self.display_names.pop(person, None)
                self.options.pop(person, None)
        self._keep_rows(keep, rebuild=False)

        rows = []
        for person, photos in people.items():
            if not photos:
                continue
            records = {}
            for name, (sha256, vector, *quality) in sorted(photos.items()):
                eye_distance, sharpness = quality if quality else (None, None)
                records[name] = Photo(sha256=sha256, row=len(self.labels), eye_distance=eye_distance, sharpness=sharpness)
                self.labels.append(person)
                rows.append(np.asarray(vector, dtype=np.float32).reshape(self.dim))
            self.photos[person] = records
        if rows:
            self.vectors = np.vstack([self.vectors, np.stack(rows)])
        self._rebuild_index()

    def remove_person(self, person: str) -> None:
        """Remove a person and their vectors; a person not enrolled is ignored."""
        if person not in self.photos:
            return
        keep = [i for i, label in enumerate(self.labels) if label != person]
        del self.photos[person]
        self.display_names.pop(person, None)
        self.options.pop(person, None)
        self._keep_rows(keep)

    def vector_of(self, person: str, photo: str) -> np.ndarray:
        """Return the stored vector of one enrolled photo."""
        return self.vectors[self.photos[person][photo].row]

    def closest_people(self, max_rows: int = 5000) -> tuple[str, str, float] | None:
        """Return the two different people with the nearest pair of vectors, and that distance.

        Returns None with fewer than two people, or above ``max_rows``
        vectors, where the all-pairs comparison would cost too much memory.
        """
        rows = len(self.labels)
        if len(set(self.labels)) < 2 or rows > max_rows:
            return None
        similarity = self.vectors @ self.vectors.T
        labels = np.array(self.labels, dtype=object)
        similarity[labels[:, None] == labels[None, :]] = -np.inf
        i, j = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
        distance = float(np.sqrt(max(0.0, 2.0 - 2.0 * float(similarity[i, j]))))
        first, second = sorted((self.labels[i], self.labels[j]))
        return first, second, distance

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Return the ``k`` nearest vectors of each query as Euclidean distances and people.

        Distances are ``(n, min(k, len(self)))``, ascending per row, in 0..2.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(queries), 0), dtype=np.float32), [[] for _ in queries]
        similarities, rows = self._index.search(queries, k)
        distances = np.sqrt(np.clip(2.0 - 2.0 * similarities, 0.0, 4.0))
        people = [[self.labels[r] for r in row] for row in rows]
        return distances, people

    @staticmethod
    def check_writable(folder: str | os.PathLike[str]) -> None:
        """Raise :class:`GalleryError` unless a gallery can be saved in ``folder``.

        Creates the folder if needed and writes and removes a probe file, so
        a long enrolment does not end in a failed save. The probe has its own
        unique name, so it never truncates the temporary file of a save that
        another process is writing.
        """
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as error:
            raise GalleryError(
                f"cannot write a gallery in {folder}: {error.strerror or error}. "
                f"Choose a writable folder (the gallery is the file {GALLERY_FILE} inside it)."
            ) from error

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the gallery atomically to ``folder/gallery.npz`` and return that path.

        Raises :class:`GalleryError` when the write fails; the previous
        gallery file, if any, is then left as it was.
        """
        folder = Path(folder)
        path = folder / GALLERY_FILE
        temporary = folder / (GALLERY_FILE + ".tmp")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._write(path, temporary)
        except OSError as error:
            try:
                temporary.unlink()
            except OSError:
                pass
            raise GalleryError(
                f"cannot save the gallery to {path}: {error.strerror or error}. The previous gallery is unchanged."
            ) from error
        log.info("saved gallery %s: %d people, %d vectors", path, len(self.photos), len(self))
        return path

    def _write(self, path: Path, temporary: Path) -> None:
        meta = {
            "format": FORMAT_VERSION,
            "model_name": self.model_name,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "labels": self.labels,
            "photos": {
                person: {name: _photo_meta(p) for name, p in records.items()}
                for person, records in self.photos.items()
            },
            "display_names": self.display_names,
            "options": {person: options.as_dict() for person, options in self.options.items()},
        }
        index_bytes = faiss.serialize_index(self._index)
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                index=index_bytes,
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Gallery:
        """Read ``folder/gallery.npz``; raise :class:`GalleryError` if it is missing or corrupt."""
        path = Path(folder) / GALLERY_FILE
        if Path(folder).is_file():
            raise GalleryError(f"{folder} is a file: --gallery takes the folder that holds {GALLERY_FILE}")
        if not path.is_file():
            raise GalleryError(
                f"no gallery at {path}: enrol people first with 'edgeface enroll PEOPLE_DIR --gallery {folder}'"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes().decode("utf-8"))
                index = faiss.deserialize_index(np.ascontiguousarray(data["index"]))
        except OSError as error:
            raise GalleryError(f"cannot read gallery {path}: {error.strerror or error}") from error
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, RuntimeError) as error:
            raise GalleryError(
                f"gallery {path} is corrupt ({type(error).__name__}): enrol again to rebuild it"
            ) from error

        if not isinstance(meta, dict):
            raise GalleryError(f"gallery {path} has invalid metadata (not a JSON object): enrol again to rebuild it")
        if meta.get("format") not in _READABLE_VERSIONS:
            raise GalleryError(
                f"gallery {path} has format {meta.get('format')!r}, but this edgeface reads formats "
                f"{', '.join(map(str, _READABLE_VERSIONS))}: enrol again to rebuild it"
            )
        try:
            dim = int(meta["dim"])
            labels = list(meta["labels"])
            photos = {
                person: {name: _photo_from_meta(p) for name, p in records.items()}
                for person, records in meta["photos"].items()
            }
            gallery = cls(model_name=meta["model_name"], fingerprint=meta["fingerprint"], dim=dim)
            gallery.display_names = {str(k): str(v) for k, v in meta.get("display_names", {}).items() if k in photos}
            gallery.options = {
                person: PersonOptions.from_dict(options, f"gallery options of {person}")
                for person, options in meta.get("options", {}).items()
                if person in photos
            }
        except (KeyError, TypeError, ValueError, AttributeError, AssertionError, PersonOptionsError) as error:
            raise GalleryError(f"gallery {path} has invalid metadata ({type(error).__name__}): enrol again to rebuild it") from error

        rows = sorted(p.row for records in photos.values() for p in records.values())
        if not isinstance(index, faiss.IndexFlatIP) or rows != list(range(len(labels))):
            raise GalleryError(f"gallery {path} has invalid metadata (index type or photo rows): enrol again to rebuild it")
        if index.ntotal != len(labels) or index.d != dim:
            raise GalleryError(
                f"gallery {path} is inconsistent: {index.ntotal} vectors of dimension {index.d} "
                f"for {len(labels)} labels of dimension {dim}: enrol again to rebuild it"
            )
        gallery.labels = labels
        gallery.photos = photos
        gallery.vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else gallery.vectors
        gallery._index = index
        return gallery

    def _keep_rows(self, keep: list[int], rebuild: bool = True) -> None:
        remap = {old: new for new, old in enumerate(keep)}
        self.labels = [self.labels[i] for i in keep]
        self.vectors = self.vectors[keep] if keep else np.zeros((0, self.dim), dtype=np.float32)
        for records in self.photos.values():
            for photo in records.values():
                photo.row = remap[photo.row]
        if rebuild:
            self._rebuild_index()

    def _rebuild_index(self) -> None:
        index = faiss.IndexFlatIP(self.dim)
        if len(self.vectors):
            index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
        self._index = index

    def __repr__(self) -> str:
        return f"<Gallery model={self.model_name} people={len(self.photos)} vectors={len(self)}>"


@contextlib.contextmanager
def locked(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on a gallery folder while enrolment rewrites it.

    Two syncs at once (a stick plugged in while someone runs ``edgeface
    sync``) would write the same temporary file. The second one raises
    :class:`GalleryError` instead of waiting. Readers need no lock, because
    the gallery file is replaced by rename.
    """
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        descriptor = try_lock(Path(folder) / LOCK_FILE)
    except BlockingIOError as error:
        raise GalleryError(
            f"another enrolment is updating the gallery in {folder}: wait until it finishes and try again"
        ) from error
    except OSError as error:
        raise GalleryError(f"cannot lock the gallery folder {folder}: {error.strerror or error}") from error
    try:
        yield
    finally:
        os.close(descriptor)


def _photo_meta(photo: Photo) -> dict:
    meta = {"sha256": photo.sha256, "row": photo.row}
    if photo.eye_distance is not None:
        meta["eye_distance"] = round(float(photo.eye_distance), 2)
    if photo.sharpness is not None:
        meta["sharpness"] = round(float(photo.sharpness), 2)
    return meta


def _photo_from_meta(meta: dict) -> Photo:
    eye_distance = meta.get("eye_distance")
    sharpness = meta.get("sharpness")
    return Photo(
        sha256=str(meta["sha256"]),
        row=int(meta["row"]),
        eye_distance=None if eye_distance is None else float(eye_distance),
        sharpness=None if sharpness is None else float(sharpness),
    )


def store_photo(folder: str | os.PathLike[str], sha256: str, data: bytes) -> None:
    """Keep a copy of an enrolled photo as ``folder/photos/<sha256>``.

    The copy is written under a temporary name and renamed, so a crash never
    leaves a partial file under a hash name. An existing copy is kept as it is.
    Raises OSError when the write fails.
    """
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    store = Path(folder) / PHOTOS_FOLDER
    target = store / sha256
    if target.is_file():
        return
    store.mkdir(parents=True, exist_ok=True)
    temporary = store / (sha256 + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def prune_photos(folder: str | os.PathLike[str], keep: set[str]) -> int:
    """Delete stored photo copies whose hash is not in ``keep``; return how many were deleted.

    Call it only after the gallery that references ``keep`` has been saved,
    so the gallery on disk never refers to a deleted copy.
    """
    store = Path(folder) / PHOTOS_FOLDER
    if not store.is_dir():
        return 0
    deleted = 0
    for path in store.iterdir():
        if path.name in keep:
            continue
        try:
            path.unlink()
            deleted += 1
        except OSError as error:
            log.warning("cannot delete stored photo %s: %s", path, error.strerror or error)
    if not keep:
        try:
            store.rmdir()
        except OSError:
            pass
    return deleted


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
