"""The gallery: enrolled people, their photos and vectors, and the FAISS index.

A gallery lives in one folder as one file, ``gallery.npz``, holding the
metadata as JSON (people, the sha256 of each source photo, the model's name
and fingerprint) and the serialised FAISS index. Saving writes a temporary
file, fsyncs it, renames it over the old one and fsyncs the folder, so a crash
at any moment leaves either the old gallery or the new one, never a mix.

Vectors are unit length and searched by inner product
(``faiss.IndexFlatIP``); the search converts similarities to Euclidean
distances, ``d = sqrt(2 - 2 * cos)``, before any threshold is applied.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from .errors import GalleryError, ModelMismatchError

log = logging.getLogger(__name__)

GALLERY_FILE = "gallery.npz"
FORMAT_VERSION = 1


@dataclass
class Photo:
    """One enrolled photo: its content hash and the row of its vector."""

    sha256: str
    row: int


@dataclass
class Gallery:
    """Enrolled people and their unit vectors, searchable by Euclidean distance.

    ``labels[i]`` is the person of vector row ``i``; ``photos[person]`` maps
    each photo's file name to its record.
    """

    model_name: str
    fingerprint: str
    dim: int
    labels: list[str] = field(default_factory=list)
    photos: dict[str, dict[str, Photo]] = field(default_factory=dict)
    vectors: np.ndarray | None = None
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

    def replace_people(self, people: dict[str, dict[str, tuple[str, np.ndarray]]]) -> None:
        """Set the photos of several people at once, with one copy of the vectors and one index build.

        ``people`` maps each person to ``{photo name: (sha256, vector)}``; a
        person given no photos is removed.
        """
        keep = [i for i, label in enumerate(self.labels) if label not in people]
        for person in people:
            self.photos.pop(person, None)
        self._keep_rows(keep, rebuild=False)

        rows = []
        for person, photos in people.items():
            if not photos:
                continue
            records = {}
            for name, (sha256, vector) in sorted(photos.items()):
                records[name] = Photo(sha256=sha256, row=len(self.labels))
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
        self._keep_rows(keep)

    def vector_of(self, person: str, photo: str) -> np.ndarray:
        """Return the stored vector of one enrolled photo."""
        return self.vectors[self.photos[person][photo].row]

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

        Creates the folder if needed and writes and removes the temporary
        file, so a long enrolment does not end in a failed save.
        """
        folder = Path(folder)
        temporary = folder / (GALLERY_FILE + ".tmp")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb"):
                pass
            temporary.unlink()
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
                person: {name: {"sha256": p.sha256, "row": p.row} for name, p in records.items()}
                for person, records in self.photos.items()
            },
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
        if meta.get("format") != FORMAT_VERSION:
            raise GalleryError(f"gallery {path} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        try:
            dim = int(meta["dim"])
            labels = list(meta["labels"])
            photos = {
                person: {name: Photo(sha256=p["sha256"], row=int(p["row"])) for name, p in records.items()}
                for person, records in meta["photos"].items()
            }
            gallery = cls(model_name=meta["model_name"], fingerprint=meta["fingerprint"], dim=dim)
        except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as error:
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
