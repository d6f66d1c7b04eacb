"""The door daemon: camera frames in, door openings for enrolled people out.

``edgeface run`` builds one :class:`Daemon` and calls :meth:`Daemon.run`.
The main thread sets things up, handles signals and watches; a worker
thread runs the frame loop:

    frame -> detect -> size and sharpness gate -> track -> embed the faces of
    undecided tracks -> search and vote -> access decision -> relay and event

Failing closed is the rule throughout. The relay is forced off when the
daemon starts, after every pulse, on any exception in the loop, on a camera
fault, on SIGTERM and SIGINT, and at exit. A signal releases it within
milliseconds, because the main thread waits idle and so runs the signal
handler at once. A gallery that
cannot be read means nobody is recognised until a good one loads.

The daemon reloads the gallery when its file changes (``edgeface sync``
replaces it atomically), on SIGHUP and on the MQTT reload command.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter, deque
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import faiss
import numpy as np

from .decision import AccessDecider, DecisionParams, Outcome
from .door import Door
from .errors import EdgefaceError
from .gallery import GALLERY_FILE, Gallery
from .lockfile import try_lock
from .notify import Notifier
from .pipeline import Pipeline, StageTimes
from .quality import eye_distance, sharpness
from .tracking import Tracker
from .voting import Match, VotingParams, vote

log = logging.getLogger("edgeface.daemon")

#: Frames in a row that may fail before the daemon gives up and exits, so
#: that systemd restarts it.
MAX_CONSECUTIVE_ERRORS = 10
#: Seconds between checks of the gallery file for a change.
GALLERY_CHECK_SECONDS = 1.0
#: Seconds between status lines in the log.
STATUS_LOG_SECONDS = 60.0

_NO_GALLERY = Match(person=None, votes=0, distance=None, runner_up=None, runner_up_distance=None, reason="no-gallery")


class Daemon:
    """One door: camera, recognition, decision, relay, event log and MQTT.

    Everything heavy (models, gallery, pins, database, broker connection) is
    prepared here, once; :meth:`run` only loops. The optional arguments
    replace a part for tests and benchmarks.

    :param config: the validated configuration (:func:`edgeface.config.load_config`).
    :param pin_factory: a gpiozero pin factory for the door pins.
    """

    def __init__(
        self,
        config: dict,
        *,
        pin_factory: Any = None,
        pipeline: Pipeline | None = None,
        camera: Any = None,
        events: Any = None,
        notifier: Notifier | None = None,
        mqtt: Any = None,
    ) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self._reload = threading.Event()
        self.counters: Counter[str] = Counter()
        self.exit_code = 0
        self.last_decision: dict | None = None
        #: The latest decisions, newest last (bounded, for status and tests).
        self.recent: deque[Outcome] = deque(maxlen=100)
        self._started = time.monotonic()
        self._fps = 0.0
        self._last_frame_time: float | None = None
        self._camera_fault: str | None = None
        self._unknown_present = False
        self.gallery: Gallery | None = None
        self._gallery_stamp: tuple | None = None
        self._gallery_checked = 0.0
        self._gallery_dir = Path(config["gallery"]["path"])
        self._sync_thread: threading.Thread | None = None

        # One query at a time: FAISS's OpenMP threads only add wake-up latency
        # to a single search (benchmarks: 24 ms against 1.4 ms at 100k vectors
        # with the other core busy).
        faiss.omp_set_num_threads(1)
        # The relay first, forced off, so that nothing below can leave it on.
        self.door = Door(config["door"], pin_factory=pin_factory, listener=self._door_event)
        self._instance_lock: int | None = None
        try:
            self._instance_lock = _lock_instance(Path(config["events"]["database"]))
            self.notifier = notifier or Notifier()
            self.pipeline = pipeline or Pipeline.from_config(config)
            self.params = VotingParams(**config["matching"])
            self.decider = AccessDecider(DecisionParams.from_config(config), policy=self._policy)
            decision = config["decision"]
            self.tracker = Tracker(decision["track_iou"], decision["track_timeout"])
            self.min_eye_distance = decision["min_eye_distance"]
            self.min_sharpness = decision["min_sharpness"]
            self.thumbnails = config["events"]["thumbnails"]
            self._stage_ms: dict[str, float] = {}
            if events is None:
                from .events import EventLog

                events = EventLog.from_config(config)
            self.events = events
            if camera is None:
                from .camera import Camera

                camera = Camera(config["camera"], stop=self.stop_event)
            self.camera = camera
            if mqtt is None and config["mqtt"]["enabled"]:
                from .mqtt import MqttBridge

                mqtt = MqttBridge(config, self.events, on_unlock=self._remote_unlock, on_reload=self._reload.set, on_sync=self._remote_sync)
            self.mqtt = mqtt
        except BaseException:
            self.door.close()
            if self._instance_lock is not None:
                os.close(self._instance_lock)
            raise

    # -- main thread -------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM or SIGINT, the end of a replayed source, or a fatal error.

        Returns the exit status: 0 after a clean stop, 1 after a fatal error.
        """
        restore = self._install_signal_handlers()
        worker = threading.Thread(target=self._worker, name="edgeface-loop", daemon=True)
        try:
            self._load_gallery()
            if self.mqtt is not None:
                self.mqtt.start()
            self._record("system", {"state": "started", "model": self.pipeline.model_name, "people": self._people()})
            self._publish_state(door="locked")
            status = f"watching; {self._people()} people enrolled; model {self.pipeline.model_name}"
            self.notifier.ready(status)
            log.info("ready: %s", status)
            worker.start()
            next_status = time.monotonic() + STATUS_LOG_SECONDS
            while worker.is_alive() and not self.stop_event.is_set():
                self.stop_event.wait(1.0)
                self._publish_state(fps=round(self._fps, 2), unknown_present=self._unknown_present)
                if time.monotonic() >= next_status:
                    next_status += STATUS_LOG_SECONDS
                    snapshot = self.status()
                    log.info("status: %s", snapshot)
                    self.notifier.status(self._status_line())
        finally:
            self.door.lock("shutdown")
            self.stop_event.set()
            self.notifier.stopping()
            worker_alive = worker.is_alive()
            if worker_alive:
                worker.join(timeout=10.0)
            self._record("system", {"state": "stopped", "exit_code": self.exit_code, **self.counters})
            self.close()
            restore()
        return self.exit_code

    def stop(self) -> None:
        """Ask the daemon to stop; the door locks at once."""
        self.door.lock("stop")
        self.stop_event.set()

    def close(self) -> None:
        """Release the pins, the camera, the broker connection and the event log."""
        self.door.close()
        for name, method in (("camera", "close"), ("mqtt", "stop")):
            part = getattr(self, name, None)
            if part is None:
                continue
            try:
                getattr(part, method)()
            except Exception:
                log.exception("closing %s failed", name)
        try:
            self.events.close()
        except Exception:
            log.exception("closing the event log failed")
        if self._instance_lock is not None:
            os.close(self._instance_lock)
            self._instance_lock = None

    def status(self) -> dict[str, Any]:
        """Return a snapshot of the counters and state, for the log, systemd and MQTT."""
        return {
            "uptime_s": round(time.monotonic() - self._started, 1),
            "fps": round(self._fps, 2),
            "last_frame_ms": {stage: round(ms, 1) for stage, ms in self._stage_ms.items()},
            "frames": self.counters["frames"],
            "faces": self.counters["faces"],
            "grants": self.counters["grants"],
            "denials": self.counters["denials"],
            "faults": self.counters["faults"],
            "people": self._people(),
            "camera_fault": self._camera_fault,
            "door": "unlocked" if self.door.unlocked else "locked",
            "last_decision": self.last_decision,
        }

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_stop(signum, frame):
            self.door.lock(signal.Signals(signum).name)
            self.stop_event.set()

        def on_hup(signum, frame):
            self._reload.set()

        previous = {sig: signal.signal(sig, handler) for sig, handler in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop), (signal.SIGHUP, on_hup))}

        def restore():
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    # -- worker thread -----------------------------------------------------

    def _worker(self) -> None:
        errors = 0
        try:
            for item in self.camera.stream():
                if self.stop_event.is_set():
                    break
                kind = type(item).__name__
                if kind == "CameraFault":
                    self._on_camera_fault(item)
                    continue
                if kind == "CameraRecovered":
                    self._on_camera_recovered(item)
                    continue
                self._maybe_reload()
                try:
                    self.process(item)
                except Exception as error:
                    errors += 1
                    self.door.lock("error")
                    self.counters["faults"] += 1
                    log.exception("frame %s failed (%d in a row)", getattr(item, "index", "?"), errors)
                    self._record("fault", {"source": "loop", "kind": type(error).__name__, "message": str(error)[:500]})
                    if errors >= MAX_CONSECUTIVE_ERRORS:
                        log.error("%d frames in a row failed; exiting so that the service restarts", errors)
                        self.exit_code = 1
                        break
                else:
                    errors = 0
                    self.notifier.watchdog()
            else:
                if not self.stop_event.is_set() and self.counters["frames"] == 0:
                    log.error("the source ended without a single readable frame")
                    self.exit_code = 1
                elif not self.stop_event.is_set():
                    log.info("the source has no more frames")
                    # A pulse granted on the last frames runs to its end.
                    deadline = time.monotonic() + self.door.unlock_seconds
                    while self.door.unlocked and time.monotonic() < deadline and not self.stop_event.is_set():
                        time.sleep(0.05)
        except Exception as error:
            self.door.lock("error")
            self.exit_code = 1
            log.exception("the frame loop failed")
            self._record("fault", {"source": "camera", "kind": type(error).__name__, "message": str(error)[:500]})
        finally:
            self.door.lock("loop_end")
            self.stop_event.set()

    def process(self, frame: Any) -> list[Outcome]:
        """Run one frame (a :class:`edgeface.camera.Frame`) through recognition and decision."""
        now = frame.time
        if self._last_frame_time is not None and now > self._last_frame_time:
            rate = 1.0 / (now - self._last_frame_time)
            self._fps = rate if self._fps == 0 else 0.9 * self._fps + 0.1 * rate
        self._last_frame_time = now
        self.counters["frames"] += 1

        self.pipeline.times = StageTimes()
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        faces = self.pipeline.detect(rgb, bgr=frame.image)
        judged = [f for f in faces if eye_distance(f) >= self.min_eye_distance and sharpness(rgb, f) >= self.min_sharpness]
        self.counters["faces"] += len(judged)
        tracks = self.tracker.update(judged, now)
        todo = [(face, track) for face, track in zip(judged, tracks) if not self.decider.decided(track)]
        if not todo:
            self._unknown_present = False
            return []

        gallery = self.gallery
        if gallery is not None and len(gallery):
            vectors = self.pipeline.embed(rgb, [face for face, _ in todo])
            distances, people = gallery.search(vectors, self.params.k2)
            matches = [vote(people[i], distances[i], self.params) for i in range(len(todo))]
        else:
            matches = [_NO_GALLERY] * len(todo)

        self._unknown_present = any(not m.known for m in matches)
        outcomes = []
        when = datetime.now()
        for (face, track), match in zip(todo, matches):
            outcome = self.decider.observe(track, match, now, len(judged), when)
            if outcome is not None:
                thumbnail = _thumbnail(frame.image, face) if self.thumbnails else None
                self._decide(outcome, thumbnail)
                outcomes.append(outcome)
        self._stage_ms.update({"detect": self.pipeline.times.detect, "embed": self.pipeline.times.embed})
        return outcomes

    def _decide(self, outcome: Outcome, thumbnail: bytes | None = None) -> None:
        event = outcome.as_event()
        if outcome.person is not None and self.gallery is not None and hasattr(self.gallery, "display_name"):
            event["name"] = self.gallery.display_name(outcome.person)
        self.last_decision = event
        self.recent.append(outcome)
        self._record("decision", event, thumbnail)
        name = event.get("name", outcome.person) or "Unknown"
        distance = "-" if outcome.distance is None else f"{outcome.distance:.3f}"
        if outcome.granted:
            self.counters["grants"] += 1
            log.info("GRANTED %s: %d of %d frames, distance %s, track %d", name, outcome.votes, outcome.frames, distance, outcome.track)
            self.door.pulse(f"granted:{outcome.person}")
        else:
            self.counters["denials"] += 1
            log.info("denied %s (%s): %d of %d frames, distance %s, track %d", name, outcome.reason, outcome.votes, outcome.frames, distance, outcome.track)
        if outcome.person is not None:
            self._publish_state(last_person=name)

    def _on_camera_fault(self, fault: Any) -> None:
        self.door.lock("camera_fault")
        self.counters["faults"] += 1
        self._camera_fault = fault.kind
        self.tracker.clear()
        log.error("camera fault (%s): %s", fault.kind, fault.message)
        self._record("fault", {"source": "camera", "kind": fault.kind, "message": fault.message})
        self._publish_state(camera_fault=True)
        self.notifier.status(f"camera fault ({fault.kind}): {fault.message}")

    def _on_camera_recovered(self, recovered: Any) -> None:
        log.info("camera recovered after %.1f s", recovered.downtime)
        self._camera_fault = None
        self._record("fault", {"source": "camera", "kind": "recovered", "message": f"frames flow again after {recovered.downtime:.1f} s"})
        self._publish_state(camera_fault=False)
        self.notifier.status(self._status_line())

    # -- gallery -----------------------------------------------------------

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self._reload.is_set() and now - self._gallery_checked < GALLERY_CHECK_SECONDS:
            return
        self._gallery_checked = now
        forced = self._reload.is_set()
        self._reload.clear()
        if forced or self._stamp() != self._gallery_stamp:
            self._load_gallery()

    def _stamp(self) -> tuple | None:
        try:
            st = (self._gallery_dir / GALLERY_FILE).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load_gallery(self) -> None:
        stamp = self._stamp()
        self._gallery_stamp = stamp
        self.tracker.clear()
        if stamp is None:
            self.gallery = None
            log.warning("gallery not found at %s: nobody will be recognised. Enrol people with: edgeface sync", self._gallery_dir / GALLERY_FILE)
            return
        try:
            gallery = self.pipeline.load_gallery(self._gallery_dir)
        except EdgefaceError as error:
            self.gallery = None
            self.counters["faults"] += 1
            log.error("loading the gallery failed, so nobody will be recognised until it is fixed: %s", error)
            self._record("fault", {"source": "gallery", "kind": "load_failed", "message": str(error)[:500]})
            return
        self.gallery = gallery
        log.info("gallery loaded: %d people, %d photos", len(gallery.people), len(gallery))
        closest = gallery.closest_people()
        if closest is not None and closest[2] <= self.params.threshold:
            first, second, distance = closest
            message = (
                f"{first} and {second} have photos {distance:.3f} apart, within matching.threshold "
                f"{self.params.threshold}: a face between them can match either. Check that their photos are "
                "in the right folders, or lower matching.threshold"
            )
            log.warning("ambiguous gallery: %s", message)
            self._record("fault", {"source": "gallery", "kind": "ambiguous", "message": message})
        self._publish_state(gallery_size=len(gallery), people=len(gallery.people))

    def _people(self) -> int:
        return 0 if self.gallery is None else len(self.gallery.people)

    def _policy(self, person: str, when: datetime) -> tuple[bool, str]:
        gallery = self.gallery
        if gallery is None:
            return False, "no_gallery"
        options_of = getattr(gallery, "options_of", None)
        if options_of is None:
            return True, ""
        return options_of(person).access_allowed(when)

    # -- door, events and MQTT ---------------------------------------------

    def _door_event(self, kind: str, details: dict[str, Any]) -> None:
        self._record("door" if kind == "door" else "alert", {"event": kind, **details})
        if kind == "door":
            self._publish_state(door=details["state"], contact=details.get("contact"))

    def _remote_unlock(self, requester: str) -> None:
        log.warning("remote unlock by %s", requester)
        self.door.pulse(f"remote:{requester}")

    def _remote_sync(self) -> None:
        source = self.config["enrolment"]["source"]
        if source is None:
            log.warning("sync requested over MQTT, but enrolment.source is not set; nothing to sync from")
            self._record("command", {"command": "sync", "accepted": False, "reason": "enrolment.source is not set"})
            return
        if self._sync_thread is not None and self._sync_thread.is_alive():
            log.info("sync requested over MQTT while a sync is running; ignored")
            return
        self._sync_thread = threading.Thread(target=self._sync, args=(source,), name="edgeface-sync", daemon=True)
        self._sync_thread.start()

    def _sync(self, source: str) -> None:
        """Sync the gallery from ``source`` with a pipeline of its own (the loop's is not shared across threads)."""
        from .enrolment import EnrolmentRules
        from .sync import SyncError, sync_stick

        log.info("syncing the gallery from %s", source)
        try:
            pipeline = Pipeline.from_config(self.config)
            report = sync_stick(source, self._gallery_dir, pipeline, EnrolmentRules.from_config(self.config))
        except SyncError as error:
            report = error.report
        except Exception as error:
            log.exception("sync from %s failed", source)
            self._record("fault", {"source": "sync", "kind": type(error).__name__, "message": str(error)[:500]})
            return
        log.info("sync from %s: %s", source, report.status)
        self._record("sync", report.as_dict())
        self._reload.set()

    def _record(self, kind: str, data: dict[str, Any], thumbnail: bytes | None = None) -> None:
        try:
            self.events.record(kind, data, thumbnail=thumbnail)
        except Exception:  # the event log promises not to raise; the door loop goes on regardless
            log.exception("recording a %s event failed", kind)
        if self.mqtt is not None:
            try:
                self.mqtt.wake()
            except Exception:
                log.exception("waking the MQTT publisher failed")

    def _publish_state(self, **state: Any) -> None:
        if self.mqtt is None:
            return
        try:
            self.mqtt.update_state(**state)
        except Exception:
            log.exception("publishing state to MQTT failed")

    def _status_line(self) -> str:
        c = self.counters
        camera = f"camera fault {self._camera_fault}" if self._camera_fault else f"{self._fps:.1f} fps"
        return f"{camera}; {self._people()} people; {c['grants']} granted, {c['denials']} denied, {c['faults']} faults"


def _lock_instance(database: Path) -> int:
    """Hold an exclusive lock beside the event log, so that one daemon at a time uses it.

    Two daemons on one event log would interleave their records, and would
    usually also share the relay pin and the camera. Returns the lock
    file's descriptor, which contains this process's id.
    """
    path = database.with_name(database.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = try_lock(path)
    except BlockingIOError:
        try:
            owner = path.read_text(encoding="ascii", errors="replace").strip() or "unknown"
        except OSError:
            owner = "unknown"
        raise EdgefaceError(
            f"another edgeface run (pid {owner}) is using the event log {database}; stop it first, "
            "or give this one its own events.database"
        ) from None
    except OSError as error:
        raise EdgefaceError(f"cannot create the lock file {path}: {error.strerror}; check that events.database is in a writable folder") from error
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, str(os.getpid()).encode("ascii"), 0)
    return descriptor


def _thumbnail(image: np.ndarray, face: Any, size: int = 96) -> bytes | None:
    """Return a JPEG of the face box, at most ``size`` pixels on its longer side."""
    height, width = image.shape[:2]
    x, y, w, h = (int(round(v)) for v in face.box)
    crop = image[max(y, 0):min(y + h, height), max(x, 0):min(x + w, width)]
    if crop.size == 0:
        return None
    scale = size / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return data.tobytes() if ok else None


def run_from_config(config: dict) -> int:
    """Build the daemon from a configuration and run it; used by ``edgeface run``."""
    daemon = Daemon(config)
    return daemon.run()
