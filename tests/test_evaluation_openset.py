"""Open-set false accept and false reject rates on vectors placed at known distances."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface.evaluation.neighbours import search
from edgeface.evaluation.openset import float32_at_most, rates, threshold_at_far
from edgeface.gallery import Gallery


def at_distance(base: np.ndarray, side: np.ndarray, distance: float) -> np.ndarray:
    """Return the unit vector in the plane of ``base`` and ``side`` at ``distance`` from ``base``."""
    angle = 2.0 * np.arcsin(distance / 2.0)
    return (np.cos(angle) * base + np.sin(angle) * side).astype(np.float32)


@pytest.fixture()
def scene():
    """Two people, two genuine queries and four impostors at chosen nearest distances."""
    axes = np.eye(6, dtype=np.float32)
    gallery = Gallery(model_name="test", fingerprint="x", dim=6)
    gallery.replace_people({"ana": {"a.jpg": ("", axes[0])}, "ben": {"b.jpg": ("", axes[1])}})
    queries = np.stack(
        [
            at_distance(axes[0], axes[2], 0.30),  # ana, genuine
            at_distance(axes[1], axes[3], 0.60),  # ben, genuine
            at_distance(axes[0], axes[4], 0.45),  # impostors, nearest ana
            at_distance(axes[0], axes[5], 0.70),
            at_distance(axes[1], axes[4], 0.90),
            np.full(6, np.nan, dtype=np.float32),  # an impostor image without a face
        ]
    )
    found = search(gallery, gallery.people, queries, 2)
    true = np.array([0, 1, 2, 2, 2, 2])
    impostor = np.array([False, False, True, True, True, True])
    return found, true, impostor


def test_rates_at_thresholds(scene):
    found, true, impostor = scene
    figures = rates(found, true, impostor, 1, 2, np.array([0.2, 0.4, 0.5, 0.65, 0.8, 1.0]))
    assert figures["false_accepts"].tolist() == [0, 0, 1, 1, 2, 3]
    assert figures["far"].tolist() == pytest.approx([0, 0, 0.25, 0.25, 0.5, 0.75])
    assert figures["false_rejects"].tolist() == [2, 1, 1, 0, 0, 0]
    assert figures["frr"].tolist() == pytest.approx([1, 0.5, 0.5, 0, 0, 0])


def test_threshold_at_far_is_exact(scene):
    found, _, impostor = scene
    # A quarter of the four impostors may be accepted: the one at 0.45, not the one at 0.70.
    threshold = threshold_at_far(found.distances[:, 0], impostor, 0.25)
    assert 0.45 <= threshold < 0.70
    assert np.float32(threshold) < found.distances[3, 0]
    assert threshold == float(np.nextafter(found.distances[3, 0], np.float32(0)))


def test_threshold_at_far_needs_enough_impostors(scene):
    found, _, impostor = scene
    assert threshold_at_far(found.distances[:, 0], impostor, 1e-3) is None


def test_float32_at_most():
    assert float32_at_most(0.5) == np.float32(0.5)
    value = float32_at_most(0.1)
    assert float(value) <= 0.1
    assert float(np.nextafter(value, np.float32(1))) > 0.1
