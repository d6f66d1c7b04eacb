"""The door camera: one stream of frames and faults from picamera2, OpenCV, a video file or an image folder.

:class:`Camera` turns ``camera.source`` into a source (see
:mod:`edgeface.camera_sources`), and :meth:`Camera.stream` yields
:class:`Frame` values at most ``camera.max_fps`` times a second. A source
failure (no camera, a read timeout, frozen or malformed frames, a lost
stream) is yielded as one :class:`CameraFault` per fault episode instead of
raised, so the daemon can keep the door locked and report it. The camera then reconnects
with exponential backoff and yields :class:`CameraRecovered` when frames flow
again. A ``camera.source`` that names nothing usable raises
:class:`~edgeface.errors.ConfigError` at construction, so the daemon refuses
to start.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np

from .camera_sources import (
    ImageFolderSource,
    LiveSource,
    OpenCVLiveSource,
    Picamera2Source,
    RawFrame,
    SourceError,
    VideoFileSource,
    list_images,
)
from .config import defaults
from .errors import ConfigError

log = logging.getLogger(__name__)

FAULT_KINDS = ("open_failed", "timeout", "frozen", "disconnected", "bad_frame")

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")

# The first reconnect waits this many seconds; each further attempt doubles the
# wait, up to camera.reconnect_max_seconds.
FIRST_RECONNECT_SECONDS = 1.0

# Frozen-frame detection hashes every FROZEN_STRIDE-th row and column: 1/16 of
# the pixels, which still differ between frames of a live sensor through noise.
FROZEN_STRIDE = 4

# Query parameters of a stream URL whose values are hidden in logs, matched
# case-insensitively as substrings of the parameter name.
_SECRET_QUERY_KEYS = ("pass", "pwd", "token", "secret", "key", "auth")


@dataclass(frozen=True)
class Frame:
    """One camera image for the recogniser."""

    image: np.ndarray  # H x W x 3 uint8, BGR, C-contiguous
    time: float  # seconds on the source's clock: the camera clock for live sources, media time for replays
    index: int  # frame number from the source


@dataclass(frozen=True)
class CameraFault:
    """The first failure of a fault episode; the camera is closed and reconnecting."""

    kind: str  # one of FAULT_KINDS
    message: str  # what failed and what to check
    time: float  # source clock: the camera clock for live sources, the last media time for replays


@dataclass(frozen=True)
class CameraRecovered:
    """Frames flow again after a fault episode."""

    time: float  # source clock time of the first frame after the fault
    downtime: float  # seconds on the camera clock from the fault to this frame


class Camera:
    """Frames from ``camera.source`` with fault reporting, frozen-frame detection and reconnection.

    :param settings: the ``camera`` section of the configuration.
    :param stop: when set, waits end at once and :meth:`stream` returns.
    :param clock: time in seconds, used to stamp live frames, to measure
        frozen runs and downtime, and to pace realtime replays. Read and open
        timeouts are measured in real time (``time.monotonic``) whatever the
        clock.
    :param sleep: ``sleep(seconds)`` for backoff waits and replay pacing. The
        default ``stop.wait`` returns early when ``stop`` is set, so shutdown is
        immediate. The camera checks ``stop`` after each call.

    Raises ConfigError when the source is neither ``picamera2``, a device
    number, a device path, an rtsp:// or http(s):// URL, a video file that
    OpenCV opens nor a folder with image files, and when picamera2 is
    requested but not installed.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        # Keys missing from ``settings`` take their defaults, so older config dicts keep working.
        self._settings = {**defaults()["camera"], **settings}
        self._stop = stop
        self._clock = clock
        self._sleep = sleep if sleep is not None else stop.wait
        self._closed = False
        self.description = describe_source(settings["source"])
        self._source = _make_source(self._settings, stop)

    def __repr__(self) -> str:
        return f"<Camera {self.description} max_fps={self._settings['max_fps']:g} closed={self._closed}>"

    @property
    def live(self) -> bool:
        """True for cameras and streams (frame times from ``clock``), False for replays (media time)."""
        return self._source.live

    def stream(self) -> Iterator[Frame | CameraFault | CameraRecovered]:
        """Yield frames, and faults and recoveries, until a replay ends, ``stop`` is set or :meth:`close` is called.

        At most one frame is yielded per 1/max_fps seconds of source time.
        Frames in between are read and dropped, never queued. Live frames that
        repeat the previous frame are dropped too. When they repeat for more
        than ``frozen_seconds`` the camera faults as frozen. Realtime replays
        wait until each frame's media time has passed on the clock. Other
        replays yield as fast as they are consumed. Both yield the same frames.

        A fault closes the source. Live sources reconnect after 1, 2, 4 ...
        seconds, up to ``reconnect_max_seconds``. A replay reconnects only
        after ``open_failed``, and ends after any other fault, because
        replaying it again would fail the same way.
        """
        delay = FIRST_RECONNECT_SECONDS
        fault_clock: float | None = None  # camera clock at the start of the current fault episode
        attempts = 0  # failed opens and sessions in the current fault episode
        last_time = 0.0
        try:
            while not self._should_end():
                try:
                    self._open_source()
                    for frame in self._read_frames():
                        if fault_clock is not None:
                            downtime = self._clock() - fault_clock
                            log.info("%s recovered after %.1f s; frame=%d", self.description, downtime, frame.index)
                            yield CameraRecovered(time=frame.time, downtime=downtime)
                            fault_clock = None
                            attempts = 0
                            delay = FIRST_RECONNECT_SECONDS
                        last_time = frame.time
                        yield frame
                    return
                except SourceError as error:
                    self._source.close()
                    if fault_clock is None:
                        fault_clock = self._clock()
                        fault_time = fault_clock if self._source.live else last_time
                        log.error("%s fault %s: %s", self.description, error.kind, error.message)
                        yield CameraFault(kind=error.kind, message=error.message, time=fault_time)
                    if not self._source.live and error.kind != "open_failed":
                        return
                    attempts += 1
                    log.warning(
                        "%s: %s (failure %d of this fault); reconnecting in %g s",
                        self.description,
                        error.kind,
                        attempts,
                        delay,
                    )
                    self._sleep(delay)
                    delay = min(delay * 2, self._settings["reconnect_max_seconds"])
        finally:
            self._source.close()

    def close(self) -> None:
        """Close the source and end :meth:`stream`. Safe to call from another thread and more than once."""
        self._closed = True
        self._source.close()

    def _should_end(self) -> bool:
        return self._closed or self._stop.is_set()

    def _open_source(self) -> None:
        try:
            self._source.open()
        except SourceError:
            raise
        except Exception as error:
            # Sources report expected failures as SourceError. Anything else is
            # logged with its traceback and still becomes a fault, so the door
            # daemon keeps running with the door locked.
            log.exception("unexpected error opening %s", self.description)
            raise SourceError("open_failed", f"opening {self.description} failed: {type(error).__name__}: {error}") from error

    def _read_source(self, timeout: float) -> RawFrame | None:
        try:
            return self._source.read(timeout)
        except SourceError:
            raise
        except Exception as error:
            log.exception("unexpected error reading %s", self.description)
            raise SourceError("disconnected", f"reading {self.description} failed: {type(error).__name__}: {error}") from error

    def _read_frames(self) -> Iterator[Frame]:
        """Yield checked, stamped and decimated frames of one open session; raise SourceError on a fault."""
        settings = self._settings
        max_fps = settings["max_fps"]
        live = self._source.live
        pace = not live and settings["realtime"]
        frozen = FrozenDetector(settings["frozen_seconds"], self.description) if live else None
        timeout = settings["open_timeout"]  # the first frame may wait for a stream's key frame
        last_slot: int | None = None
        replay_start = self._clock() if pace else 0.0

        while not self._should_end():
            raw = self._read_source(timeout)
            if raw is None:
                return
            timeout = settings["read_timeout"]

            image = check_image(raw, self.description)
            frame_time = raw.media_time if raw.media_time is not None else self._clock()
            if frozen is not None and frozen.repeats(image, frame_time):
                continue

            # Slots of 1/max_fps seconds: the first frame in each slot is kept.
            # The small epsilon keeps index / max_fps in its own slot despite rounding.
            slot = math.floor(frame_time * max_fps + 1e-6)
            if last_slot is not None and slot <= last_slot:
                continue
            last_slot = slot

            if pace:
                wait = replay_start + frame_time - self._clock()
                if wait > 0:
                    self._sleep(wait)
                    if self._should_end():
                        return
            yield Frame(image=image, time=frame_time, index=raw.index)


class FrozenDetector:
    """Tracks runs of identical frames by a hash of every FROZEN_STRIDE-th pixel row and column."""

    def __init__(self, frozen_seconds: float, description: str) -> None:
        self._frozen_seconds = frozen_seconds
        self._description = description
        self._digest: bytes | None = None
        self._since = 0.0

    def repeats(self, image: np.ndarray, frame_time: float) -> bool:
        """Return True when ``image`` repeats the previous frame.

        Raises SourceError("frozen") once the repeats have lasted more than
        ``frozen_seconds`` since the first frame of the run.
        """
        hasher = hashlib.blake2b(digest_size=16)
        hasher.update(str(image.shape).encode())
        hasher.update(image[::FROZEN_STRIDE, ::FROZEN_STRIDE].tobytes())
        digest = hasher.digest()
        if digest != self._digest:
            self._digest = digest
            self._since = frame_time
            return False

        frozen_for = frame_time - self._since
        if frozen_for > self._frozen_seconds:
            raise SourceError(
                "frozen",
                f"{self._description} has delivered identical frames for {frozen_for:.1f} s "
                f"(camera.frozen_seconds = {self._frozen_seconds:g}). The driver may have stalled, or the lens "
                "is covered in total darkness; reconnecting",
            )
        return True


def check_image(raw: RawFrame, description: str) -> np.ndarray:
    """Return the frame's image as a C-contiguous H x W x 3 uint8 array.

    Raises SourceError("bad_frame") for any other type, dtype or shape.
    """
    image = raw.image
    if not isinstance(image, np.ndarray):
        raise SourceError(
            "bad_frame", f"{description} delivered a {type(image).__name__} as frame {raw.index}, not an image array"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise SourceError(
            "bad_frame",
            f"{description} delivered frame {raw.index} with shape {image.shape} and dtype {image.dtype}; "
            "expected height x width x 3 uint8 (BGR). Check the camera's pixel format",
        )
    return np.ascontiguousarray(image)


def describe_source(source: str) -> str:
    """Describe ``camera.source`` for logs and messages, with any password in a URL hidden.

    Never raises: a source that names nothing usable is described as such.
    """
    kind = _source_kind(source)
    if kind == "picamera2":
        return "picamera2"
    if kind == "device":
        return f"OpenCV device {source}"
    if kind == "url":
        return f"stream URL {redact_url(source)}"
    if kind == "file":
        return f"video file {source}"
    if kind == "folder":
        return f"image folder {source}"
    if kind == "bad_url":
        return f"unsupported URL {redact_url(source)}"
    return f"missing path {source}"


def redact_url(url: str) -> str:
    """Return ``url`` with the password and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = parts.port
    except ValueError:
        # An unparsable URL may still contain a password: hide everything after the scheme.
        scheme, _, _ = url.partition("://")
        return f"{scheme}://***"

    netloc = parts.netloc
    if password is not None or "@" in netloc:
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        credentials = f"{user}:***" if password is not None else user
        netloc = f"{credentials}@{host}" + (f":{port}" if port is not None else "")

    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        hidden = [
            (name, "***" if any(secret in name.lower() for secret in _SECRET_QUERY_KEYS) else value)
            for name, value in pairs
        ]
        query = urlencode(hidden, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _source_kind(source: str) -> str:
    if source == "picamera2":
        return "picamera2"
    if re.fullmatch(r"[0-9]+", source):
        return "device"
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        return "url" if scheme in STREAM_SCHEMES else "bad_url"

    path = Path(source).expanduser()
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        # ValueError: a NUL character in the path.
        return "missing"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISCHR(mode):
        return "device"
    if stat.S_ISREG(mode):
        return "file"
    return "missing"


def _make_source(settings: dict[str, Any], stop: threading.Event) -> Any:
    source = settings["source"]
    kind = _source_kind(source)
    description = describe_source(source)
    timeouts = {"open_timeout": settings["open_timeout"], "close_timeout": settings["read_timeout"]}

    if kind == "picamera2":
        return Picamera2Source(_import_picamera2(), settings["width"], settings["height"], stop, **timeouts)

    if kind in ("device", "url"):
        target: int | str = int(source) if source.isdecimal() else source
        return OpenCVLiveSource(
            target,
            description,
            settings["width"],
            settings["height"],
            stop,
            stream_url=kind == "url",
            read_timeout=settings["read_timeout"],
            **timeouts,
        )

    if kind == "file":
        path = Path(source).expanduser()
        _check_video_file(path, description)
        return VideoFileSource(path, description, settings["max_fps"])

    if kind == "folder":
        folder = Path(source).expanduser()
        _check_image_folder(folder, description)
        return ImageFolderSource(folder, description, settings["max_fps"])

    if kind == "bad_url":
        raise ConfigError(
            f"camera.source {description}: the scheme is not supported. "
            f"Use one of {', '.join(scheme + '://' for scheme in STREAM_SCHEMES)}"
        )
    raise ConfigError(
        f"camera.source {source!r} is not 'picamera2', a device number such as '0', a /dev path, "
        "an rtsp:// or http(s):// URL, or an existing video file or image folder. "
        f"Check the path (relative paths start at {Path.cwd()})"
    )


def _import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError as error:
        raise ConfigError(
            "camera.source is picamera2, but the picamera2 package cannot be imported "
            f"({error}). On Raspberry Pi OS install it with `sudo apt install python3-picamera2` and "
            "create the virtual environment with --system-site-packages"
        ) from error
    return Picamera2


def _check_video_file(path: Path, description: str) -> None:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ConfigError(
                f"camera.source: OpenCV cannot open {description} as a video. "
                "Check that it is a video file that FFmpeg decodes (for example H.264 in MP4)"
            )
    finally:
        capture.release()


def _check_image_folder(folder: Path, description: str) -> None:
    try:
        images = list_images(folder)
    except OSError as error:
        raise ConfigError(f"camera.source: cannot list {description}: {error.strerror}") from error
    if not images:
        raise ConfigError(
            f"camera.source: {description} contains no image files "
            "(.jpg, .jpeg, .png, .bmp, .gif, .tif, .tiff, .webp, .pgm, .ppm, .pnm)"
        )


__all__ = [
    "FAULT_KINDS",
    "Camera",
    "CameraFault",
    "CameraRecovered",
    "Frame",
    "LiveSource",
    "describe_source",
    "redact_url",
]
