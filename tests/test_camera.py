"""Tests of edgeface.camera with real OpenCV, a real video, real image files and a fake picamera2 module.

This machine has no camera, so picamera2 is replaced by a fake module in
``sys.modules``. Frozen-frame and backoff logic runs on an injected clock and
sleep. The only real waits are the short read and open timeouts of the
timeout tests, whose duration is never asserted.
"""

from __future__ import annotations

import logging
import shutil
import socket
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from edgeface.camera import Camera, CameraFault, CameraRecovered, Frame, describe_source, redact_url
from edgeface.camera_sources import OpenCVLiveSource, SourceError
from edgeface.config import defaults, load_config
from edgeface.errors import ConfigError

from conftest import KNN, SHARED, require

CLIP = SHARED / "data" / "hamilton" / "short_hamilton_clip.mp4"
CLIP_FPS = 29.97
CLIP_FRAMES = 275


class FakeClock:
    """A clock that advances ``step`` seconds per call and by every recorded sleep."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


class RecordingSleep:
    """Records requested waits, advances the clock by them, and sets ``stop`` after ``limit`` waits."""

    def __init__(self, clock: FakeClock, stop: threading.Event, limit: int | None = None) -> None:
        self.clock = clock
        self.stop = stop
        self.limit = limit
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.clock.now += seconds
        if self.limit is not None and len(self.waits) >= self.limit:
            self.stop.set()
        return self.stop.is_set()


def camera_settings(**overrides):
    settings = defaults()["camera"]
    settings.update(overrides)
    return settings


def distinct_frame(index: int) -> np.ndarray:
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :, 0] = index % 256
    image[:, :, 1] = (index // 256) % 256
    image[0, 0, 2] = 255
    return image


class FakeCameraSystem:
    """A fake picamera2 module whose cameras behave as each test sets, one behaviour per Picamera2() call.

    A behaviour is an exception (raised by the constructor) or a function of
    the capture number that returns the image or raises. The last behaviour
    is reused when the list runs out.
    """

    def __init__(self, behaviours, cameras=None, capture_interval=0.005, max_captures=3000) -> None:
        self.behaviours = list(behaviours)
        # A camera that never faults would make some tests wait forever, so
        # every fake camera fails after max_captures and the test fails instead.
        self.max_captures = max_captures
        self.cameras = [{"Model": "imx708", "Id": "/base/fake", "Num": 0}] if cameras is None else cameras
        self.capture_interval = capture_interval
        self.constructed = 0
        self.instances = []

    def module(self) -> types.ModuleType:
        system = self

        class Picamera2:
            @staticmethod
            def global_camera_info():
                return list(system.cameras)

            def __init__(self, camera_num=0):
                system.constructed += 1
                behaviour = system.behaviours.pop(0) if len(system.behaviours) > 1 else system.behaviours[0]
                if isinstance(behaviour, BaseException):
                    raise behaviour
                self.behaviour = behaviour
                self.captures = 0
                self.config = None
                self.started = False
                self.stopped = False
                self.closed = False
                system.instances.append(self)

            def create_video_configuration(self, main=None, **kwargs):
                return {"main": dict(main or {}), **kwargs}

            def configure(self, config):
                self.config = config

            def start(self):
                self.started = True

            def capture_array(self, name="main"):
                assert self.started and not self.closed
                if self.captures >= system.max_captures:
                    raise RuntimeError("fake camera reached its capture limit")
                # Paces the fake like a sensor, so the reader thread does not spin.
                time.sleep(system.capture_interval)
                image = self.behaviour(self.captures)
                self.captures += 1
                return image

            def stop(self):
                self.stopped = True

            def close(self):
                self.closed = True

        module = types.ModuleType("picamera2")
        module.Picamera2 = Picamera2
        return module


@pytest.fixture
def fake_picamera2(monkeypatch):
    def install(behaviours, **kwargs) -> FakeCameraSystem:
        system = FakeCameraSystem(behaviours, **kwargs)
        monkeypatch.setitem(sys.modules, "picamera2", system.module())
        return system

    return install


def collect(stream, *, frames_after_recovery: int | None = None, max_items: int = 10_000):
    """Collect items from ``stream``; stop after that many frames follow a CameraRecovered."""
    items = []
    recovered_at = None
    for item in stream:
        items.append(item)
        if isinstance(item, CameraRecovered):
            recovered_at = len(items)
        if frames_after_recovery is not None and recovered_at is not None:
            if len(items) - recovered_at >= frames_after_recovery:
                break
        assert len(items) < max_items, "the stream did not end"
    return items


def kinds(items):
    return [type(item).__name__ for item in items]


# Video file


def test_video_nonrealtime_count_and_times():
    clip = require(CLIP)
    camera = Camera(camera_settings(source=str(clip), realtime=False, max_fps=8.0), stop=threading.Event())

    frames = list(camera.stream())

    assert not camera.live
    assert all(isinstance(frame, Frame) for frame in frames)
    # One frame per 1/8 s slot of media time over 275 frames at 29.97 fps: slots 0..73.
    assert len(frames) == 74
    times = [frame.time for frame in frames]
    assert all(later > earlier for earlier, later in zip(times, times[1:]))
    assert all(later - earlier > 0.1 for earlier, later in zip(times, times[1:]))
    for frame in frames:
        assert frame.time == pytest.approx(frame.index / CLIP_FPS)
    assert frames[0].index == 0
    assert frames[-1].index == CLIP_FRAMES - 1
    assert frames[0].image.shape == (360, 640, 3)
    assert frames[0].image.dtype == np.uint8
    assert frames[0].image.flags["C_CONTIGUOUS"]


def test_video_realtime_same_frames_paced():
    clip = require(CLIP)
    stop = threading.Event()
    clock = FakeClock()
    sleep = RecordingSleep(clock, stop)
    settings = camera_settings(source=str(clip), realtime=True, max_fps=8.0)

    paced = list(Camera(settings, stop=stop, clock=clock, sleep=sleep).stream())
    fast = list(Camera({**settings, "realtime": False}, stop=threading.Event()).stream())

    assert [frame.index for frame in paced] == [frame.index for frame in fast]
    assert [frame.time for frame in paced] == [frame.time for frame in fast]
    # The clock only moves by the sleeps, so the waits add up to the last frame's media time.
    assert len(sleep.waits) == len(paced) - 1
    assert sum(sleep.waits) == pytest.approx(paced[-1].time)
    assert np.array_equal(paced[10].image, fast[10].image)


def test_video_stop_ends_replay():
    clip = require(CLIP)
    stop = threading.Event()
    camera = Camera(camera_settings(source=str(clip), realtime=False), stop=stop)

    frames = []
    for frame in camera.stream():
        frames.append(frame)
        if len(frames) == 3:
            stop.set()

    assert len(frames) == 3


def test_video_text_file_rejected(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="cannot open video file"):
        Camera(camera_settings(source=str(path)), stop=threading.Event())


# Image folder


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    generated = {}
    for name, value in (("01.png", 40), ("03.png", 120), ("10.png", 200)):
        image = np.zeros((60, 80, 3), np.uint8)
        image[:, :40] = (value, 0, 255 - value)  # BGR
        image[:, 40:] = (0, value, 0)
        cv2.imwrite(str(folder / name), image)
        generated[name] = image
    (folder / "02_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / ".hidden.png").write_bytes(b"ignored")
    (folder / "readme.txt").write_text("ignored\n", encoding="utf-8")
    return folder, generated


def test_folder_order_and_corrupt_skipped(image_folder, caplog):
    folder, generated = image_folder
    camera = Camera(camera_settings(source=str(folder), realtime=False, max_fps=4.0), stop=threading.Event())

    with caplog.at_level(logging.WARNING, logger="edgeface.camera_sources"):
        frames = list(camera.stream())

    assert all(isinstance(frame, Frame) for frame in frames)
    assert [frame.index for frame in frames] == [0, 2, 3]
    assert [frame.time for frame in frames] == pytest.approx([0.0, 0.5, 0.75])
    for frame, name in zip(frames, ("01.png", "03.png", "10.png")):
        assert np.array_equal(frame.image, generated[name]), name
    assert "02_corrupt.png" in caplog.text


def test_folder_identical_images_not_frozen(tmp_path):
    folder = tmp_path / "still"
    folder.mkdir()
    image = np.full((40, 40, 3), 90, np.uint8)
    for index in range(30):
        cv2.imwrite(str(folder / f"{index:03d}.png"), image)

    settings = camera_settings(source=str(folder), realtime=False, max_fps=1.0, frozen_seconds=1.0)
    items = list(Camera(settings, stop=threading.Event()).stream())

    assert len(items) == 30
    assert all(isinstance(item, Frame) for item in items)


def test_folder_realtime_paced_at_max_fps(image_folder):
    folder, _ = image_folder
    stop = threading.Event()
    clock = FakeClock()
    sleep = RecordingSleep(clock, stop)
    camera = Camera(camera_settings(source=str(folder), realtime=True, max_fps=4.0), stop=stop, clock=clock, sleep=sleep)

    frames = list(camera.stream())

    assert [frame.index for frame in frames] == [0, 2, 3]
    # Image 2 waits 0.5 s because the corrupt image 1 keeps its slot; image 3 waits 0.25 s.
    assert sleep.waits == pytest.approx([0.5, 0.25])


def test_folder_with_real_photos(tmp_path):
    folder = tmp_path / "door"
    folder.mkdir()
    photos = sorted(require(KNN / "train" / "biden").glob("*.jpg"))
    for index, photo in enumerate(photos):
        shutil.copy(photo, folder / f"{index:02d}{photo.suffix}")

    frames = list(Camera(camera_settings(source=str(folder), realtime=False), stop=threading.Event()).stream())

    assert len(frames) == len(photos)
    reference = cv2.imread(str(photos[0]))
    assert frames[0].image.shape == reference.shape
    # Pillow and OpenCV may decode JPEG with different IDCTs, so compare the mean colour.
    assert np.abs(frames[0].image.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).max() < 2.0


def test_folder_without_images_rejected(tmp_path):
    (tmp_path / "readme.txt").write_text("no images\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="contains no image files"):
        Camera(camera_settings(source=str(tmp_path)), stop=threading.Event())


# Source selection and descriptions


def test_missing_path_rejected(tmp_path):
    missing = tmp_path / "no-such-clip.mp4"

    with pytest.raises(ConfigError) as raised:
        Camera(camera_settings(source=str(missing)), stop=threading.Event())

    message = str(raised.value)
    assert str(missing) in message
    assert "picamera2" in message


def test_unsupported_url_scheme_rejected():
    with pytest.raises(ConfigError, match="rtsp://"):
        Camera(camera_settings(source="ftp://user:pw@127.0.0.1/x"), stop=threading.Event())


def test_missing_picamera2_rejected(monkeypatch):
    # None in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "picamera2", None)

    with pytest.raises(ConfigError, match="python3-picamera2"):
        Camera(camera_settings(source="picamera2"), stop=threading.Event())


def test_describe_source_kinds(tmp_path, image_folder):
    folder, _ = image_folder
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")

    assert describe_source("picamera2") == "picamera2"
    assert describe_source("0") == "OpenCV device 0"
    assert describe_source(str(video)) == f"video file {video}"
    assert describe_source(str(folder)) == f"image folder {folder}"
    assert describe_source(str(tmp_path / "gone")).startswith("missing path")


def test_describe_source_hides_password():
    described = describe_source("rtsp://admin:s3cret@192.168.1.20:554/stream1")

    assert described == "stream URL rtsp://admin:***@192.168.1.20:554/stream1"
    assert "s3cret" not in described


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://cam.local/video.mjpg", "http://cam.local/video.mjpg"),
        ("rtsp://viewer@cam.local/live", "rtsp://viewer@cam.local/live"),
        ("rtsp://u:p%40ss@[fe80::1]:8554/x", "rtsp://u:***@[fe80::1]:8554/x"),
        ("https://cam.local/snap?user=a&password=hunter2&ch=1", "https://cam.local/snap?user=a&password=***&ch=1"),
        ("http://cam.local/live?token=abc", "http://cam.local/live?token=***"),
    ],
)
def test_redact_url_cases(url, expected):
    assert redact_url(url) == expected


def test_config_resolves_relative_source(tmp_path):
    (tmp_path / "clips").mkdir()
    config_file = tmp_path / "config.yaml"
    config_file.write_text("camera:\n  source: clips/door.mp4\n", encoding="utf-8")

    assert load_config(config_file)["camera"]["source"] == str(tmp_path / "clips" / "door.mp4")

    for unchanged in ("picamera2", "0", "rtsp://cam.local/x"):
        config_file.write_text(f"camera:\n  source: '{unchanged}'\n", encoding="utf-8")
        assert load_config(config_file)["camera"]["source"] == unchanged


# picamera2 (fake module)


def test_picamera2_frames_and_configuration(fake_picamera2):
    system = fake_picamera2([distinct_frame])
    stop = threading.Event()
    camera = Camera(
        camera_settings(source="picamera2", width=64, height=48, max_fps=4.0, read_timeout=5.0),
        stop=stop,
        clock=FakeClock(step=0.125),
    )

    frames = []
    for item in camera.stream():
        frames.append(item)
        if len(frames) == 4:
            stop.set()

    assert all(isinstance(frame, Frame) for frame in frames)
    assert len(frames) == 4
    # One frame per 0.25 s slot: frames are stamped 0.125 s apart on the injected clock.
    times = [frame.time for frame in frames]
    assert all(later - earlier >= 0.25 for earlier, later in zip(times, times[1:]))
    assert all(frame.image.shape == (48, 64, 3) for frame in frames)
    indexes = [frame.index for frame in frames]
    assert indexes == sorted(set(indexes))
    # RGB888 arrays are already in OpenCV's BGR order, so channels pass through unswapped.
    for frame in frames:
        assert np.array_equal(frame.image, distinct_frame(frame.index))
    assert camera.live

    instance = system.instances[0]
    assert instance.config["main"] == {"size": (64, 48), "format": "RGB888"}
    assert instance.stopped
    assert instance.closed


def test_picamera2_frozen_then_recovered(fake_picamera2):
    frozen_image = distinct_frame(999)

    def freezes(index):
        return distinct_frame(index) if index < 5 else frozen_image

    system = fake_picamera2([freezes, distinct_frame])
    stop = threading.Event()
    clock = FakeClock(step=0.25)
    sleep = RecordingSleep(clock, stop)
    settings = camera_settings(source="picamera2", max_fps=8.0, frozen_seconds=1.0, read_timeout=5.0)
    camera = Camera(settings, stop=stop, clock=clock, sleep=sleep)

    items = collect(camera.stream(), frames_after_recovery=3)
    camera.close()

    faults = [item for item in items if isinstance(item, CameraFault)]
    assert len(faults) == 1
    assert faults[0].kind == "frozen"
    assert "identical frames" in faults[0].message
    fault_at = items.index(faults[0])
    assert fault_at >= 1
    assert all(isinstance(item, Frame) for item in items[:fault_at])
    assert isinstance(items[fault_at + 1], CameraRecovered)
    assert items[fault_at + 1].downtime >= 1.0
    assert all(isinstance(item, Frame) for item in items[fault_at + 2 :])
    # The frozen image is yielded at most once: its repeats are dropped.
    repeats = [item for item in items if isinstance(item, Frame) and np.array_equal(item.image, frozen_image)]
    assert len(repeats) <= 1
    assert sleep.waits == [1.0]
    assert system.constructed == 2
    assert system.instances[0].closed


def test_picamera2_capture_blocks_times_out(fake_picamera2):
    release = threading.Event()

    def blocks(index):
        release.wait()
        raise RuntimeError("camera released by the test")

    system = fake_picamera2([blocks])
    stop = threading.Event()
    clock = FakeClock()
    sleep = RecordingSleep(clock, stop, limit=1)
    settings = camera_settings(source="picamera2", read_timeout=0.2, open_timeout=0.5)
    camera = Camera(settings, stop=stop, clock=clock, sleep=sleep)

    # Releases the capture if the camera never times out, so the test fails instead of hanging.
    safety = threading.Timer(30.0, release.set)
    safety.start()
    try:
        items = collect(camera.stream())
    finally:
        release.set()
        safety.cancel()

    assert kinds(items) == ["CameraFault"]
    assert items[0].kind == "timeout"
    assert "picamera2" in items[0].message
    assert "ribbon cable" in items[0].message
    assert sleep.waits == [1.0]
    assert system.constructed == 1


def test_picamera2_open_fails_backoff_grows(fake_picamera2):
    system = fake_picamera2([RuntimeError("Camera __init__ sequence did not complete.")])
    stop = threading.Event()
    clock = FakeClock()
    sleep = RecordingSleep(clock, stop, limit=7)
    camera = Camera(camera_settings(source="picamera2", reconnect_max_seconds=10.0), stop=stop, clock=clock, sleep=sleep)

    items = collect(camera.stream())

    assert kinds(items) == ["CameraFault"]
    fault = items[0]
    assert fault.kind == "open_failed"
    assert "Camera __init__ sequence did not complete" in fault.message
    assert "ribbon cable" in fault.message
    assert "rpicam-hello --list-cameras" in fault.message
    assert sleep.waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert system.constructed == 7


def test_picamera2_no_camera_open_failed(fake_picamera2):
    system = fake_picamera2([distinct_frame], cameras=[])
    stop = threading.Event()
    sleep = RecordingSleep(FakeClock(), stop, limit=1)

    items = collect(Camera(camera_settings(source="picamera2"), stop=stop, sleep=sleep).stream())

    assert kinds(items) == ["CameraFault"]
    assert items[0].kind == "open_failed"
    assert "no camera" in items[0].message
    assert "rpicam-hello --list-cameras" in items[0].message
    assert system.constructed == 0


def test_stop_during_backoff_ends_stream(fake_picamera2):
    system = fake_picamera2([RuntimeError("no camera")])
    stop = threading.Event()
    waits = []

    def shutdown_during_wait(seconds):
        # The daemon's shutdown sets stop while the camera waits to reconnect.
        waits.append(seconds)
        stop.set()
        return True

    items = collect(Camera(camera_settings(source="picamera2"), stop=stop, sleep=shutdown_during_wait).stream())

    assert kinds(items) == ["CameraFault"]
    assert waits == [1.0]
    assert system.constructed == 1


def test_picamera2_bad_frame_then_recovered(fake_picamera2):
    def grey(index):
        return np.zeros((48, 64), np.uint8)

    system = fake_picamera2([grey, distinct_frame])
    stop = threading.Event()
    clock = FakeClock(step=0.25)
    sleep = RecordingSleep(clock, stop)
    camera = Camera(camera_settings(source="picamera2", read_timeout=5.0), stop=stop, clock=clock, sleep=sleep)

    items = collect(camera.stream(), frames_after_recovery=2)
    camera.close()

    assert kinds(items) == ["CameraFault", "CameraRecovered", "Frame", "Frame"]
    assert items[0].kind == "bad_frame"
    assert "(48, 64)" in items[0].message
    assert system.constructed == 2


def test_picamera2_capture_error_disconnected(fake_picamera2):
    def fails(index):
        raise RuntimeError("Device or resource busy")

    fake_picamera2([fails])
    stop = threading.Event()
    sleep = RecordingSleep(FakeClock(), stop, limit=1)

    items = collect(Camera(camera_settings(source="picamera2", read_timeout=5.0), stop=stop, sleep=sleep).stream())

    assert kinds(items) == ["CameraFault"]
    assert items[0].kind == "disconnected"
    assert "Device or resource busy" in items[0].message


# OpenCV devices and stream URLs


def closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def test_unreachable_url_fault_hides_password(caplog):
    port = closed_loopback_port()
    source = f"rtsp://door:s3cret@127.0.0.1:{port}/stream"
    stop = threading.Event()
    sleep = RecordingSleep(FakeClock(), stop, limit=1)
    camera = Camera(camera_settings(source=source, open_timeout=2.0, read_timeout=1.0), stop=stop, sleep=sleep)

    with caplog.at_level(logging.DEBUG):
        items = collect(camera.stream())

    assert kinds(items) == ["CameraFault"]
    assert items[0].kind == "open_failed"
    assert f"127.0.0.1:{port}" in items[0].message
    assert "s3cret" not in items[0].message
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(camera)


def test_missing_device_open_failed():
    stop = threading.Event()
    sleep = RecordingSleep(FakeClock(), stop, limit=1)

    items = collect(Camera(camera_settings(source="97"), stop=stop, sleep=sleep).stream())

    assert kinds(items) == ["CameraFault"]
    assert items[0].kind == "open_failed"
    assert "OpenCV device 97" in items[0].message


def test_opencv_reader_thread_reads_video():
    clip = require(CLIP)
    stop = threading.Event()
    source = OpenCVLiveSource(
        str(clip),
        "test clip",
        640,
        360,
        stop,
        stream_url=False,
        open_timeout=10.0,
        close_timeout=5.0,
        read_timeout=5.0,
    )

    source.open()
    try:
        first = source.read(10.0)
        assert first is not None
        assert first.image.shape == (360, 640, 3)
        assert first.media_time is None

        # The reader keeps only the newest frame, so reads may skip frames;
        # after the last frame OpenCV's read fails and the source disconnects.
        indexes = [first.index]
        with pytest.raises(SourceError) as raised:
            for _ in range(CLIP_FRAMES + 1):
                raw = source.read(10.0)
                indexes.append(raw.index)
        assert raised.value.kind == "disconnected"
        assert indexes == sorted(set(indexes))
        assert indexes[-1] <= CLIP_FRAMES - 1
    finally:
        source.close()

    assert source.read(1.0) is None


def test_replay_unexpected_error_is_fault(image_folder, monkeypatch):
    folder, _ = image_folder

    def broken_loader(path):
        raise MemoryError("no memory for the test image")

    monkeypatch.setattr("edgeface.camera_sources.load_image", broken_loader)
    camera = Camera(camera_settings(source=str(folder), realtime=False), stop=threading.Event())

    items = list(camera.stream())

    assert kinds(items) == ["CameraFault"]
    assert items[0].kind == "disconnected"
    assert "MemoryError" in items[0].message


def test_describe_source_malformed_inputs():
    unparsable = describe_source("rtsp://door:s3cret@[::1/stream")
    bad_port = describe_source("rtsp://door:s3cret@cam.local:99999/stream")

    assert "s3cret" not in unparsable
    assert "s3cret" not in bad_port
    assert describe_source("clip\0.mp4").startswith("missing path")
