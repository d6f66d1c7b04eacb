"""The door daemon's per-frame loop, run in a child process for its speed and peak memory.

The loop reads a frame, detects faces, aligns and embeds each face, then
searches the gallery and votes. Each setup runs in its own process so that
its peak resident memory (VmHWM) is its own: the interpreter, the libraries
it imports, the models and the gallery.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .bench_machine import status_bytes


def run_frame_loop(frames: Iterable[np.ndarray], process: Callable[[np.ndarray], int]) -> dict:
    """Feed every frame to ``process`` (which returns its face count); return counts, wall and CPU time.

    For edgeface, ``process`` is the door daemon's own per-frame step
    (:meth:`edgeface.daemon.Daemon.process`), fed every frame of the video.
    """
    count = 0
    faces = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    for frame in frames:
        faces += process(frame)
        count += 1
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    return {
        "frames": count,
        "faces": faces,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "fps": count / seconds if seconds else 0.0,
    }


def run_child(setup: dict) -> dict:
    """Build one setup's pipeline and gallery, run the loop over the video and report speed and memory."""
    from .bench_pipelines import iterate_video

    load_before = os.getloadavg()[0]
    if setup["kind"] == "baseline":
        process = _baseline_step(Path(setup["people"]))
    else:
        process = _edgeface_step(setup)

    frames = (frame for frame, _ in itertools.islice(iterate_video(Path(setup["video"])), setup.get("frames")))
    result = run_frame_loop(frames, process)
    result["peak_rss_bytes"] = status_bytes("VmHWM")
    result["load"] = [load_before, os.getloadavg()[0]]
    return result


def _baseline_step(people: Path) -> Callable[[np.ndarray], int]:
    from edgeface.imageio import is_image_file, load_image

    from .bench_pipelines import BaselinePipeline

    baseline = BaselinePipeline()
    for person in sorted(p for p in people.iterdir() if p.is_dir()):
        for photo in sorted(p for p in person.iterdir() if is_image_file(p)):
            baseline.enrol(person.name, load_image(photo))

    def step(frame: np.ndarray) -> int:
        encodings = baseline.encodings(frame)
        for encoding in encodings:
            baseline.match(encoding)
        return len(encodings)

    return step


def _edgeface_step(setup: dict) -> Callable[[np.ndarray], int]:
    """Return the door daemon's own per-frame step (quality gate, tracking, vote, decision) for one setup."""
    import cv2

    from edgeface.camera import Frame
    from edgeface.config import load_config
    from edgeface.daemon import Daemon
    from edgeface.enrolment import sync_gallery
    from edgeface.pipeline import Pipeline

    scratch = tempfile.mkdtemp(prefix="edgeface-bench-")
    config = load_config(None, {
        "embedder.model": setup["model"],
        "embedder.allow_untrained": True,
        "detector.backend": setup["detector"],
        "detector.yunet_model": setup["yunet"],
        "matching.threshold": setup["threshold"],
        "gallery.path": os.path.join(scratch, "gallery"),
        "events.database": os.path.join(scratch, "events.db"),
        "camera.source": setup["video"],
        "door.simulate": True,
    })
    pipeline = Pipeline.from_config(config)
    sync_gallery(setup["people"], config["gallery"]["path"], pipeline, 2.0)
    daemon = Daemon(config, pipeline=pipeline)
    daemon._load_gallery()
    fps = 29.97
    index = 0

    def step(frame: np.ndarray) -> int:
        nonlocal index
        # The bench decodes frames to RGB; the daemon takes the camera's BGR.
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        before = daemon.counters["faces"]
        daemon.process(Frame(image=bgr, time=index / fps, index=index))
        index += 1
        return daemon.counters["faces"] - before

    return step
