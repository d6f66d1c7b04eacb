"""Shared test fixtures: where ../shared is, and real models copied out of it.

Tests that need ../shared skip with the reason when it is absent. Models are
copied into a temporary folder before use, because manifests are written
beside the model file and ../shared is read-only in CI.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2026may.onnx"
MOBILEFACENET = SHARED / "models" / "mobilefacenet" / "MobileFaceNet.onnx"
KNN = SHARED / "data" / "knn-examples"
LFW = SHARED / "data" / "lfw"
ORL = SHARED / "data" / "orl"


def require(path: Path) -> Path:
    """Return ``path``, or skip the test when it is missing from ../shared."""
    if not path.exists():
        pytest.skip(f"test data not found: {path} (the ../shared folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return require(SHARED)


@pytest.fixture(scope="session")
def yunet_model() -> Path:
    return require(YUNET)


@pytest.fixture(scope="session")
def mobilefacenet(tmp_path_factory) -> Path:
    """MobileFaceNet copied to a temporary folder and registered with the arcface112 preset."""
    from edgeface.registration import register_model

    folder = tmp_path_factory.mktemp("mobilefacenet")
    model = folder / "MobileFaceNet.onnx"
    shutil.copy(require(MOBILEFACENET), model)
    register_model(model, preset_name="arcface112")
    return model


@pytest.fixture(scope="session")
def dlib_resnet(tmp_path_factory) -> Path:
    """dlib's face ResNet exported to a temporary folder; returns the fp32 model path."""
    from export.dlib_resnet import default_weights, export

    folder = tmp_path_factory.mktemp("dlib-resnet")
    result = export(default_weights(), folder, faces_dir=None, max_faces=0, skip_parity=True)
    return result.fp32_path


def pin_history(pin) -> list[tuple[float, bool]]:
    """Return a mock pin's history as ``(time.monotonic() of the change, state)`` pairs.

    gpiozero's ``MockPin.states`` stores the time since the previous change;
    the absolute times are rebuilt backwards from the last change.
    """
    states = list(pin.states)
    times, t = [], pin._last_change
    for state in reversed(states):
        times.append(t)
        t -= state.timestamp
    return list(zip(reversed(times), (bool(s.state) for s in states)))


def on_intervals(pin) -> tuple[list[tuple[float, float]], bool]:
    """Return ``([(start, seconds on), ...], still on)`` for a mock pin's active periods."""
    intervals, start = [], None
    for when, state in pin_history(pin):
        if state and start is None:
            start = when
        elif not state and start is not None:
            intervals.append((start, when - start))
            start = None
    return intervals, start is not None


def wait_until(condition, timeout: float = 30.0, what: str = "a condition") -> None:
    """Poll ``condition`` every 20 ms; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
