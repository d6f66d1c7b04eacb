"""Frame sources behind :class:`edgeface.camera.Camera`: picamera2, OpenCV devices and streams, video files, image folders.

Every source has the same small interface: ``open()``, ``read(timeout)`` and
``close()``. ``read`` returns a :class:`RawFrame`, or None when a replay has
ended or the source was closed, and raises :class:`SourceError` with a fault
kind and a message that names what to check.

Live sources (picamera2, OpenCV devices and stream URLs) call blocking driver
functions, so a reader thread owns the driver object: it opens the device,
captures continuously and releases the device when told to stop. The camera
thread waits for the newest frame with a timeout, so a hung driver becomes a
``timeout`` fault and never blocks the door daemon. Frames that arrive while
the consumer is busy replace each other, so frames are never queued.

Replay sources (video files and image folders) are read on the caller's
thread, frame by frame, so a replay yields the same frames every time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import ImageError
from .imageio import is_image_file, load_image

log = logging.getLogger(__name__)

# Seconds between checks of the stop event while waiting for a frame or for
# a device to open, so a shutdown ends those waits within this time.
_STOP_POLL_SECONDS = 0.1

_PICAMERA2_HINT = (
    "Check the ribbon cable (seated fully, contacts facing the right way, both latches closed) "
    "and that `rpicam-hello --list-cameras` lists the camera"
)


class SourceError(Exception):
    """A source failed; ``kind`` is one of the fault kinds of :class:`edgeface.camera.CameraFault`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class RawFrame:
    """One image as a source delivered it, before the camera checks and stamps it."""

    image: Any
    index: int
    media_time: float | None  # seconds in the replay; None for live sources, which the camera stamps


class LiveSource:
    """Base class of sources whose driver calls block: a reader thread opens, captures and releases.

    Subclasses implement ``_open_device``, ``_capture`` and ``_release``; all
    three run on the reader thread only, so a driver object is never used by
    two threads.
    """

    live = True

    def __init__(self, description: str, stop: threading.Event, *, open_timeout: float, close_timeout: float) -> None:
        self.description = description
        self._stop = stop
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._session: _ReaderSession | None = None
        self._frames_read = 0
        self._stuck_threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        running = self._thread is not None and self._thread.is_alive()
        return f"<{type(self).__name__} {self.description} reader_running={running}>"

    def open(self) -> None:
        """Start the reader thread and wait until the device is open or fails to open.

        Raises SourceError("open_failed") when opening raised, or did not
        finish within ``open_timeout`` seconds.
        """
        self._reap_stuck_threads()
        session = _ReaderSession()
        self._session = session
        self._thread = threading.Thread(
            target=self._run, args=(session,), name=f"camera-reader {self.description}", daemon=True
        )
        self._thread.start()

        deadline = time.monotonic() + self._open_timeout
        with self._condition:
            while session.state == "opening" and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(min(_STOP_POLL_SECONDS, remaining))
            state, error = session.state, session.error

        if state == "failed":
            self.close()
            raise _as_open_failed(error, self.description, self._hint())
        if state == "opening":
            self.close()
            if self._stop.is_set():
                return
            raise SourceError(
                "open_failed",
                f"opening {self.description} did not finish within {self._open_timeout:g} s "
                f"(camera.open_timeout). {self._hint()}",
            )

    def read(self, timeout: float) -> RawFrame | None:
        """Return the newest frame not returned before, waiting up to ``timeout`` seconds of real time.

        Returns None when the source was closed or the stop event is set.
        Raises SourceError("disconnected") when the driver raised or reported
        an error, and SourceError("timeout") when no new frame arrived in time.
        """
        session = self._session
        if session is None:
            return None

        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                if session.closing or self._stop.is_set():
                    return None
                if session.sequence > session.returned:
                    session.returned = session.sequence
                    return RawFrame(session.image, session.index, None)
                if session.error is not None:
                    raise _as_disconnected(session.error, self.description, self._hint())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(min(_STOP_POLL_SECONDS, remaining))

        raise SourceError(
            "timeout",
            f"{self.description} delivered no frame for {timeout:g} s (camera.read_timeout). {self._hint()}",
        )

    def close(self) -> None:
        """Tell the reader thread to release the device, and wait up to ``close_timeout`` seconds for it.

        A reader blocked inside the driver cannot be interrupted. It releases
        the device when its driver call returns, and is counted and logged
        until then.
        """
        session, thread = self._session, self._thread
        self._session = None
        self._thread = None
        if session is None:
            return

        with self._condition:
            session.closing = True
            self._condition.notify_all()
        if thread is None or thread is threading.current_thread():
            return

        thread.join(self._close_timeout)
        if thread.is_alive():
            self._stuck_threads.append(thread)
            # NOTE: a thread blocked forever in the driver is never freed; the
            # count in this warning shows whether that happens on a real device.
            log.warning(
                "camera reader thread for %s is still blocked in the driver after %.1f s; "
                "%d blocked reader thread(s) in total. If the count keeps growing, restart edgeface "
                "and check the camera",
                self.description,
                self._close_timeout,
                len(self._stuck_threads),
            )

    def _run(self, session: _ReaderSession) -> None:
        try:
            self._open_device()
        except Exception as error:  # noqa: BLE001 - every driver failure becomes an open_failed fault
            with self._condition:
                session.state, session.error = "failed", error
                self._condition.notify_all()
            self._release_quietly()
            return

        with self._condition:
            session.state = "open"
            self._condition.notify_all()

        try:
            while not session.closing:
                image = self._capture()
                with self._condition:
                    self._frames_read += 1
                    session.image, session.index = image, self._frames_read - 1
                    session.sequence += 1
                    self._condition.notify_all()
        except Exception as error:  # noqa: BLE001 - the camera thread turns it into a fault
            with self._condition:
                session.error = error
                self._condition.notify_all()
        finally:
            self._release_quietly()

    def _release_quietly(self) -> None:
        try:
            self._release()
        except Exception as error:  # noqa: BLE001 - releasing a failed device must not hide the first error
            log.warning("releasing %s failed: %s", self.description, error)

    def _reap_stuck_threads(self) -> None:
        before = len(self._stuck_threads)
        self._stuck_threads = [thread for thread in self._stuck_threads if thread.is_alive()]
        if len(self._stuck_threads) < before:
            log.info(
                "%d camera reader thread(s) for %s returned from the driver and released it",
                before - len(self._stuck_threads),
                self.description,
            )

    def _hint(self) -> str:
        return "Check the camera and its cable or network connection"

    def _open_device(self) -> None:
        raise NotImplementedError

    def _capture(self) -> Any:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


class _ReaderSession:
    """State shared between one reader thread and the camera thread, guarded by the source's condition."""

    def __init__(self) -> None:
        self.state = "opening"  # then "open" or "failed"
        self.error: BaseException | None = None
        self.closing = False
        self.image: Any = None
        self.index = -1
        self.sequence = 0  # frames captured in this session
        self.returned = 0  # sequence number of the last frame handed to read()


class Picamera2Source(LiveSource):
    """The Raspberry Pi camera through picamera2 (libcamera), main stream in RGB888 at width x height."""

    def __init__(self, picamera2_class: Any, width: int, height: int, stop: threading.Event, **timeouts: float) -> None:
        super().__init__("picamera2", stop, **timeouts)
        self._picamera2_class = picamera2_class
        self._size = (width, height)
        self._camera: Any = None

    def _open_device(self) -> None:
        cameras = self._picamera2_class.global_camera_info()
        if not cameras:
            raise SourceError("open_failed", "libcamera found no camera")
        log.info("libcamera cameras: %s", cameras)

        self._camera = self._picamera2_class()
        # picamera2 names formats after libcamera's DRM fourcc codes, which give
        # the channel order of a little-endian word: "RGB888" is stored B, G, R in
        # memory, the order OpenCV uses. picamera2's request.py maps "RGB888" to
        # PIL mode "BGR", and its JPEG encoder to "BGR" (picamera2 main branch, 2026).
        config = self._camera.create_video_configuration(main={"size": self._size, "format": "RGB888"})
        self._camera.configure(config)
        self._camera.start()

    def _capture(self) -> Any:
        # capture_array returns a copy, so the camera's buffer goes back to it at once.
        return self._camera.capture_array("main")

    def _release(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
        finally:
            camera.close()

    def _hint(self) -> str:
        return _PICAMERA2_HINT


class OpenCVLiveSource(LiveSource):
    """A capture device (number or /dev path) or a stream URL read by OpenCV's VideoCapture."""

    def __init__(
        self,
        target: int | str,
        description: str,
        width: int,
        height: int,
        stop: threading.Event,
        *,
        stream_url: bool,
        open_timeout: float,
        close_timeout: float,
        read_timeout: float,
    ) -> None:
        super().__init__(description, stop, open_timeout=open_timeout, close_timeout=close_timeout)
        self._target = target
        self._size = (width, height)
        self._stream_url = stream_url
        self._read_timeout = read_timeout
        self._capture_device: Any = None

    def _open_device(self) -> None:
        if self._stream_url:
            # OpenCV's FFmpeg backend aborts a blocking open or read after these
            # timeouts, so the reader thread returns instead of hanging on a dead host.
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(self._open_timeout * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(self._read_timeout * 1000),
            ]
            capture = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)
        else:
            capture = cv2.VideoCapture(self._target)
        self._capture_device = capture
        if not capture.isOpened():
            raise SourceError("open_failed", f"OpenCV cannot open {self.description}")

        if not self._stream_url:
            width, height = self._size
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            # Supported by V4L2; other backends ignore it.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        log.info(
            "%s opened by OpenCV backend %s at %dx%d",
            self.description,
            capture.getBackendName(),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )

    def _capture(self) -> Any:
        ok, image = self._capture_device.read()
        if not ok:
            raise SourceError("disconnected", f"{self.description} returned no frame (OpenCV read failed)")
        return image

    def _release(self) -> None:
        capture, self._capture_device = self._capture_device, None
        if capture is not None:
            capture.release()

    def _hint(self) -> str:
        if self._stream_url:
            return "Check that the camera is on the network and the URL, user name and password are right"
        return "Check the USB cable and that `v4l2-ctl --list-devices` lists the camera"


class VideoFileSource:
    """A video file decoded by OpenCV, frame by frame; media time is frame index / frame rate."""

    live = False

    def __init__(self, path: Path, description: str, fallback_fps: float) -> None:
        self.description = description
        self._path = path
        self._fallback_fps = fallback_fps
        self._capture: Any = None
        self._fps = fallback_fps
        self._index = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<VideoFileSource {self._path} fps={self._fps:g} next_index={self._index}>"

    def open(self) -> None:
        with self._lock:
            self._release_locked()
            capture = cv2.VideoCapture(str(self._path))
            if not capture.isOpened():
                raise SourceError(
                    "open_failed",
                    f"OpenCV cannot open {self.description}. Check that the file exists and is a video "
                    "that FFmpeg can decode (for example H.264 in MP4)",
                )
            self._capture = capture
            self._index = 0
            self._fps = frame_rate_of(capture, self._path, self._fallback_fps)

    def read(self, timeout: float) -> RawFrame | None:
        # NOTE: timeout is not enforced for files: a read blocks only on a stalled
        # disk or network share, which this source does not expect.
        with self._lock:
            if self._capture is None:
                return None
            ok, image = self._capture.read()
            if not ok:
                log.info("%s ended after %d frames", self.description, self._index)
                self._release_locked()
                return None
            index = self._index
            self._index += 1
            return RawFrame(image, index, index / self._fps)

    def close(self) -> None:
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()


class ImageFolderSource:
    """The image files of a folder in sorted name order; media time is file index / max_fps.

    Unreadable images are skipped with a warning. Their index numbers stay
    taken, so the media time of the other images does not depend on them.
    """

    live = False

    def __init__(self, folder: Path, description: str, max_fps: float) -> None:
        self.description = description
        self._folder = folder
        self._max_fps = max_fps
        self._files: list[Path] | None = None
        self._index = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        count = None if self._files is None else len(self._files)
        return f"<ImageFolderSource {self._folder} images={count} next_index={self._index}>"

    def open(self) -> None:
        try:
            files = list_images(self._folder)
        except OSError as error:
            raise SourceError(
                "open_failed", f"cannot list {self.description}: {error.strerror}. Check the folder and its permissions"
            ) from error
        with self._lock:
            self._files = files
            self._index = 0
        log.info("%s: %d images", self.description, len(files))

    def read(self, timeout: float) -> RawFrame | None:
        with self._lock:
            while self._files is not None and self._index < len(self._files):
                index = self._index
                path = self._files[index]
                self._index += 1
                try:
                    rgb = load_image(path)
                except ImageError as error:
                    log.warning("skipping image %d of %s: %s", index, self.description, error)
                    continue
                bgr = np.ascontiguousarray(rgb[:, :, ::-1])
                return RawFrame(bgr, index, index / self._max_fps)
            return None

    def close(self) -> None:
        with self._lock:
            self._files = None


def list_images(folder: Path) -> list[Path]:
    """Return the image files directly in ``folder`` (by extension, hidden files excluded), sorted by name."""
    files = [path for path in folder.iterdir() if is_image_file(path) and path.is_file()]
    return sorted(files, key=lambda path: path.name)


def frame_rate_of(capture: Any, path: Path, fallback_fps: float) -> float:
    """Return the capture's frame rate, or ``fallback_fps`` with a warning when the file does not state a usable one."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    # Above 1000 frames per second is taken as a broken header, not a real rate.
    if math.isfinite(fps) and 0 < fps <= 1000:
        return fps
    log.warning(
        "video file %s states no usable frame rate (%r); replaying it at camera.max_fps = %g frames per second",
        path,
        fps,
        fallback_fps,
    )
    return fallback_fps


def _as_open_failed(error: BaseException | None, description: str, hint: str) -> SourceError:
    if isinstance(error, SourceError):
        detail = error.message
    else:
        detail = f"{type(error).__name__}: {error}"
    return SourceError("open_failed", f"cannot open {description}: {detail}. {hint}")


def _as_disconnected(error: BaseException, description: str, hint: str) -> SourceError:
    if isinstance(error, SourceError):
        return SourceError(error.kind, f"{error.message}. {hint}")
    return SourceError("disconnected", f"{description} failed while capturing: {type(error).__name__}: {error}. {hint}")
