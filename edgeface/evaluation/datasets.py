"""Identification data: who is enrolled with which images, and which images are queried.

Two layouts of a data folder are read, always in sorted order so that every
run sees the same lists:

- ``train-val``: one folder per person with ``train/`` and ``val/`` inside.
  ``train`` images are enrolled and ``val`` images queried.
- ``flat``: one folder per person with the images directly inside, as in
  LFW's ``images/`` folder. People with at least ``min_images`` images take
  part; the first ``enrol`` images by sorted file name are enrolled and the
  rest queried. ``lfw-10`` is this rule with 10 and 5.

A folder that contains an ``images/`` folder (the LFW download) is read
through it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgefaceError
from ..imageio import is_image_file

LAYOUTS = ("auto", "flat", "train-val")


@dataclass(frozen=True)
class Split:
    """Enrolment and query images, as ``(person, path)`` pairs sorted by person and file name."""

    enrol: list[tuple[str, Path]]
    queries: list[tuple[str, Path]]
    description: str

    @property
    def people(self) -> list[str]:
        """People with at least one enrolment image, sorted."""
        return sorted({person for person, _ in self.enrol})

    def only(self, people: set[str]) -> Split:
        """Return the split restricted to ``people``."""
        return Split(
            [(p, path) for p, path in self.enrol if p in people],
            [(p, path) for p, path in self.queries if p in people],
            f"{self.description}, {len(people)} people",
        )


def people_folder(data_dir: str | Path) -> Path:
    """Return the folder holding one sub-folder per person: ``data_dir/images`` if it exists, else ``data_dir``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EdgefaceError(f"data folder not found: {data_dir} (expected one sub-folder of images per person)")
    images = data_dir / "images"
    return images if images.is_dir() else data_dir


def person_images(folder: Path) -> list[Path]:
    """Return the image files directly inside ``folder``, sorted by name, hidden files left out."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p))


def person_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise EdgefaceError(f"{root} has no person folders: put each person's images in a sub-folder named after them")
    return folders


def detect_layout(root: Path) -> str:
    """Return ``train-val`` when every person folder has ``train/`` and ``val/``, else ``flat``."""
    folders = person_folders(root)
    if all((f / "train").is_dir() and (f / "val").is_dir() for f in folders):
        return "train-val"
    return "flat"


def load_split(data_dir: str | Path, layout: str = "auto", min_images: int = 10, enrol: int = 5) -> Split:
    """Read the enrolment and query images of a data folder.

    :param layout: ``flat``, ``train-val`` or ``auto`` (``train-val`` when
        every person folder has both sub-folders).
    :param min_images: flat layout only: people with fewer images are left out.
    :param enrol: flat layout only: images enrolled per person, the rest queried.
    Raises :class:`EdgefaceError` when the folder has no usable person.
    """
    if layout not in LAYOUTS:
        raise EdgefaceError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if enrol < 1 or min_images <= enrol:
        raise EdgefaceError(f"--min-images ({min_images}) must exceed --enrol ({enrol}), and --enrol must be at least 1, so every person has a query")
    root = people_folder(data_dir)
    if layout == "auto":
        layout = detect_layout(root)

    enrolled: list[tuple[str, Path]] = []
    queries: list[tuple[str, Path]] = []
    if layout == "train-val":
        for folder in person_folders(root):
            enrolled += [(folder.name, p) for p in person_images(folder / "train")] if (folder / "train").is_dir() else []
            queries += [(folder.name, p) for p in person_images(folder / "val")] if (folder / "val").is_dir() else []
        description = f"train-val split of {root}"
    else:
        for folder in person_folders(root):
            images = person_images(folder)
            if len(images) < min_images:
                continue
            enrolled += [(folder.name, p) for p in images[:enrol]]
            queries += [(folder.name, p) for p in images[enrol:]]
        description = f"{root}: people with at least {min_images} images, first {enrol} by file name enrolled, the rest queried"

    if not enrolled or not queries:
        raise EdgefaceError(f"{root} gives no enrolment or no query images with layout {layout} (min images {min_images}, enrol {enrol})")
    return Split(enrolled, queries, description)


def impostor_images(data_dir: str | Path, max_images: int, exclude: set[str], seed: int = 0, below: int | None = None) -> list[tuple[str, Path]]:
    """Pick up to ``max_images`` images of people not in ``exclude``, one per person, deterministically.

    With ``below``, only people with fewer than ``below`` images qualify
    (for LFW: the people left out of ``lfw-10``). People are shuffled with
    ``random.Random(seed)`` from sorted order, and each gives its first
    image by file name. ``max_images <= 0`` takes every qualifying person.
    Returns ``(person, path)`` pairs sorted by person.
    """
    root = people_folder(data_dir)
    candidates = []
    for folder in person_folders(root):
        if folder.name in exclude:
            continue
        images = person_images(folder)
        if not images or (below is not None and len(images) >= below):
            continue
        candidates.append((folder.name, images[0]))
    random.Random(seed).shuffle(candidates)
    if max_images > 0:
        candidates = candidates[:max_images]
    return sorted(candidates)
