"""Enrol a split's images into a gallery and label its queries, for the identification protocols."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gallery import Gallery
from .datasets import Split
from .embeddings import EmbeddedImages, Embedding
from .metrics import unknown_label


@dataclass
class Enrolled:
    """A gallery built from a split, and the split's queries with their true labels.

    ``names`` are the enrolled people in label order (sorted). A query's true
    label is Unknown when its person has no enrolled image, for example when
    every enrolment image of that person failed detection.
    """

    gallery: Gallery
    names: list[str]
    query_vectors: np.ndarray
    true: np.ndarray
    query_people: list[str]
    query_paths: list[Path]
    enrol_failures: list[tuple[Path, str]] = field(default_factory=list)
    query_failures: list[tuple[Path, str]] = field(default_factory=list)


def build_gallery(embedding: Embedding, enrol: list[tuple[str, Path]], vectors: EmbeddedImages) -> Gallery:
    """Return a gallery of the enrolment images that have a vector, keyed by file name."""
    people: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
    for (person, path), vector, reason in zip(enrol, vectors.vectors, vectors.reasons):
        if reason:
            continue
        people.setdefault(person, {})[path.name] = ("", vector)
    gallery = embedding.pipeline.new_gallery()
    gallery.replace_people(people)
    return gallery


def enrol_split(embedding: Embedding, split: Split) -> Enrolled:
    """Embed a split's enrolment and query images and build its gallery."""
    enrol_vectors = embedding.embed([path for _, path in split.enrol], label="enrolment images")
    gallery = build_gallery(embedding, split.enrol, enrol_vectors)
    query_vectors = embedding.embed([path for _, path in split.queries], label="query images")
    return label_queries(gallery, split.queries, query_vectors, enrol_vectors.failed)


def label_queries(gallery: Gallery, queries: list[tuple[str, Path]], vectors: EmbeddedImages, enrol_failures=()) -> Enrolled:
    """Return the :class:`Enrolled` record of ``queries`` against ``gallery``."""
    names = gallery.people
    label_of = {name: label for label, name in enumerate(names)}
    unknown = unknown_label(len(names))
    true = np.array([label_of.get(person, unknown) for person, _ in queries], dtype=np.int64)
    return Enrolled(
        gallery=gallery,
        names=names,
        query_vectors=vectors.vectors,
        true=true,
        query_people=[person for person, _ in queries],
        query_paths=[path for _, path in queries],
        enrol_failures=list(enrol_failures),
        query_failures=vectors.failed,
    )
