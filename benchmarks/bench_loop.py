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


def peak_resident_bytes() -> int:
    """Return this process's peak resident memory (VmHWM) in bytes, or 0 where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_frame_loop(frames: Iterable[np.ndarray], process: Callable[[np.ndarray], int]) -> dict:
    """Feed every frame to ``process`` (which returns its face count); return counts, wall and CPU time.

    NOTE: this loop replaces the daemon's until ``edgeface.daemon`` is on
    main. Pass its camera source as ``frames`` and its per-frame step as
    ``process``, so that this figure measures the real daemon.
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
    result["peak_rss_bytes"] = peak_resident_bytes()
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
    from edgeface.config import defaults
    from edgeface.enrolment import sync_gallery
    from edgeface.gallery import Gallery
    from edgeface.pipeline import Pipeline
    from edgeface.voting import VotingParams

    config = defaults()
    config["embedder"]["model"] = setup["model"]
    config["embedder"]["allow_untrained"] = True
    config["detector"]["backend"] = setup["detector"]
    config["detector"]["yunet_model"] = setup["yunet"]
    pipeline = Pipeline.from_config(config)
    with tempfile.TemporaryDirectory() as scratch:
        sync_gallery(setup["people"], scratch, pipeline, dominant_face_ratio=2.0)
        gallery = Gallery.load(scratch)
    params = VotingParams(threshold=setup["threshold"])

    def step(frame: np.ndarray) -> int:
        return len(pipeline.identify(frame, gallery, params))

    return step
