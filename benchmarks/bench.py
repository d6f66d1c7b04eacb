"""Benchmark edgeface against the face_recognition-style dlib pipeline, from one run.

Prints a Markdown report and writes every figure to a JSON file:

- end to end, edgeface against the baseline on the same frames, interleaved;
- per-stage latency (median and p95): decode, detect, align, embed for each
  model, search and vote;
- the per-frame loop that the door daemon runs, over the whole video, and
  peak memory, one subprocess per model;
- ONNX Runtime session options for the dlib fp32 model;
- FAISS search latency, memory and IVF recall at 1k to 1M vectors;
- enrolment throughput and gallery load time at 10 and 1,000 people.

Run from the repository root (25 minutes on a shared 2-core machine;
``--quick`` skips the 1M-vector gallery and the CLIP models)::

    .venv/bin/python -m benchmarks.bench [--quick] [--models DIR] [--out out/bench.json]

Without ``--models`` the dlib models are exported, MobileFaceNet is copied
and registered, and CLIP ViT-B/32 is exported with random weights, all into
a temporary folder. Random CLIP weights measure speed, size and memory only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bench_machine import cpu_name
from .bench_pipelines import end_to_end_ratio
from .bench_report import format_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFAULT_VIDEO = SHARED / "data" / "hamilton" / "short_hamilton_clip.mp4"
DEFAULT_LFW = SHARED / "data" / "lfw" / "images"
DEFAULT_KNN = SHARED / "data" / "knn-examples" / "train"
DEFAULT_YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2026may.onnx"
DEFAULT_MOBILEFACENET = SHARED / "models" / "mobilefacenet" / "MobileFaceNet.onnx"

MODEL_FILES = {
    "dlib ResNet fp32": "dlib_resnet_v1.onnx",
    "dlib ResNet int8": "dlib_resnet_v1.int8.onnx",
    "MobileFaceNet": "MobileFaceNet.onnx",
    "CLIP ViT-B/32 fp32 (random)": "clip-vit-b-32-random.onnx",
    "CLIP ViT-B/32 int8 (random)": "clip-vit-b-32-random.int8.onnx",
}
THRESHOLDS = {"MobileFaceNet": 1.05}
"""Matching distance per model; the others use the dlib model's default of 0.34."""

BASELINE = "face_recognition (dlib HOG + dlib ResNet)"
EDGEFACE_DEFAULT = "edgeface default (dlib HOG + ResNet ONNX fp32)"
EDGEFACE_YUNET = "edgeface YuNet + ResNet ONNX fp32"
EDGEFACE_YUNET_INT8 = "edgeface YuNet + ResNet ONNX int8"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the 1M-vector gallery and the CLIP models")
    parser.add_argument(
        "--models", type=Path, metavar="DIR",
        help="folder with the models and manifests (default: build them in a temporary folder)",
    )
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, metavar="FILE", help="video for the loops and the comparison (default: %(default)s)")
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW, metavar="DIR", help="LFW images folder, one sub-folder per person (default: %(default)s)")
    parser.add_argument(
        "--people", type=Path, default=DEFAULT_KNN, metavar="DIR",
        help="people enrolled for the comparison and the loops, one sub-folder of photos each (default: %(default)s)",
    )
    parser.add_argument("--yunet", type=Path, default=DEFAULT_YUNET, metavar="FILE", help="YuNet face detector model (default: %(default)s)")
    parser.add_argument(
        "--mobilefacenet", type=Path, default=DEFAULT_MOBILEFACENET, metavar="FILE",
        help="MobileFaceNet ONNX file, copied and registered when --models is not given (default: %(default)s)",
    )
    parser.add_argument(
        "--compare-frames", type=int, default=138, metavar="N",
        help="video frames, spread over the clip, in the interleaved comparison (default: 138, every second frame)",
    )
    parser.add_argument("--lfw-images", type=int, default=60, metavar="N", help="LFW photos in the interleaved comparison (default: 60)")
    parser.add_argument("--loop-frames", type=int, metavar="N", help="video frames in each loop process (default: all)")
    parser.add_argument(
        "--enrol-people", type=int, nargs="+", default=[10, 1000], metavar="N",
        help="gallery sizes for the enrolment figures, in people (default: 10 1000)",
    )
    parser.add_argument("--queries", type=int, default=200, metavar="N", help="single-vector searches per gallery size (default: 200)")
    parser.add_argument(
        "--out", type=Path, default=Path("out/bench.json"), metavar="FILE",
        help="JSON file for every figure (default: out/bench.json); the Markdown report is written beside it as .md",
    )
    parser.add_argument("--report-from", type=Path, metavar="FILE", help="print the report of an earlier run's JSON file and measure nothing")
    parser.add_argument("--loop-child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.loop_child:
        from .bench_loop import run_child

        print(json.dumps(run_child(json.loads(args.loop_child))))
        return 0
    if args.report_from:
        print(format_report(json.loads(args.report_from.read_text(encoding="utf-8"))))
        return 0

    for path in (args.video, args.lfw, args.people, args.yunet):
        if not path.exists():
            sys.exit(f"error: {path} not found: pass the matching option (see --help)")

    started = datetime.now(timezone.utc)
    results = {
        "command": " ".join(["python -m benchmarks.bench", *(argv if argv is not None else sys.argv[1:])]),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_facts(),
        "quick": args.quick,
        "load": {"start": os.getloadavg()},
    }

    with tempfile.TemporaryDirectory(prefix="edgeface-bench-") as scratch:
        models = args.models or prepare_models(Path(scratch) / "models", args)
        available = {label: models / name for label, name in MODEL_FILES.items() if (models / name).is_file()}
        if args.quick:
            available = {label: path for label, path in available.items() if not label.startswith("CLIP")}
        if "dlib ResNet fp32" not in available:
            sys.exit(f"error: {models / MODEL_FILES['dlib ResNet fp32']} not found: export it with python -m export dlib-resnet --out {models}")
        results["models"] = {label: str(path) for label, path in available.items()}

        run_section(results, "comparison", lambda: run_comparison(args, available))
        run_section(results, "stages", lambda: run_stage_latency(args, available))
        run_section(results, "session_options", lambda: run_session_options(args, available["dlib ResNet fp32"]))
        run_section(results, "loops", lambda: run_loops(args, available))
        run_section(results, "scaling", lambda: run_scaling(args))
        run_section(results, "enrolment", lambda: run_enrolment(args, available["dlib ResNet fp32"]))

    results["load"]["end"] = os.getloadavg()
    results["seconds"] = (datetime.now(timezone.utc) - started).total_seconds()

    # The figures are saved before the report is built, so a report error cannot lose a long run.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    report = format_report(results)
    args.out.with_suffix(".md").write_text(report, encoding="utf-8")
    print(report)
    print(f"results written to {args.out} and {args.out.with_suffix('.md')}")
    return 0


def run_section(results: dict, name: str, measure) -> None:
    """Run one section, recording its wall time and the 1-minute load average before and after it."""
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    results[name] = measure()
    results["load"][name] = {"before": load_before, "after": os.getloadavg()[0], "seconds": time.perf_counter() - start}


def machine_facts() -> dict:
    import cv2
    import faiss
    import onnxruntime

    try:
        import dlib

        dlib_version = dlib.__version__
    except ImportError:
        dlib_version = "not installed"
    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "opencv": cv2.__version__,
            "faiss": faiss.__version__,
            "dlib": dlib_version,
            "numpy": np.__version__,
        },
    }


# ---------------------------------------------------------------------------
# Models


def prepare_models(folder: Path, args: argparse.Namespace) -> Path:
    """Export the dlib models, register MobileFaceNet and export CLIP (unless --quick) into ``folder``."""
    from edgeface.registration import register_model
    from export.dlib_resnet import default_weights, export

    folder.mkdir(parents=True)
    export(default_weights(), folder, faces_dir=None, max_faces=0, skip_parity=True)
    if args.mobilefacenet.is_file():
        shutil.copy(args.mobilefacenet, folder / "MobileFaceNet.onnx")
        register_model(folder / "MobileFaceNet.onnx", preset_name="arcface112")
    else:
        print(f"warning: {args.mobilefacenet} not found, MobileFaceNet is left out", file=sys.stderr)

    if not args.quick:
        # A subprocess keeps torch out of this process, whose memory is not measured but whose CPU is.
        command = [
            sys.executable, "-m", "export", "clip", "--model", "ViT-B-32", "--random-weights",
            "--faces", str(args.lfw), "--max-images", "4", "--out", str(folder),
        ]
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if finished.returncode != 0:
            print(
                f"warning: CLIP export failed, so CLIP is left out (pass --models DIR with its files to include it):\n"
                f"{finished.stderr[-2000:]}",
                file=sys.stderr,
            )
    return folder


def pipeline_config(model: Path, detector: str, yunet: Path) -> dict:
    """Return edgeface's default configuration with this model and detector."""
    from edgeface.config import defaults

    config = defaults()
    config["embedder"]["model"] = str(model)
    config["embedder"]["allow_untrained"] = True
    config["detector"]["backend"] = detector
    config["detector"]["yunet_model"] = str(yunet)
    return config


def build_pipeline(model: Path, detector: str, yunet: Path):
    from edgeface.pipeline import Pipeline

    return Pipeline.from_config(pipeline_config(model, detector, yunet))


def voting_params(label: str):
    from edgeface.voting import VotingParams

    return VotingParams(threshold=THRESHOLDS.get(label, 0.34))


def enrol_gallery(pipeline, people: Path):
    """Enrol the people folder with ``pipeline`` into a temporary gallery and return it."""
    from edgeface.enrolment import sync_gallery
    from edgeface.gallery import Gallery

    with tempfile.TemporaryDirectory() as scratch:
        sync_gallery(people, scratch, pipeline, 2.0)
        return Gallery.load(scratch)


# ---------------------------------------------------------------------------
# Sections


def comparison_frames(args: argparse.Namespace) -> dict[str, tuple[list, list]]:
    from .bench_pipelines import lfw_sample, read_images, read_video

    frames, decode_ms = read_video(args.video)
    step = max(1, len(frames) // args.compare_frames)
    video = (frames[::step][: args.compare_frames], decode_ms[::step][: args.compare_frames])
    lfw = read_images(lfw_sample(args.lfw, args.lfw_images))
    return {"video": video, "lfw": lfw}


def run_comparison(args: argparse.Namespace, models: dict[str, Path]) -> dict:
    """Interleave the baseline and three edgeface pipelines on the same video frames and LFW photos."""
    from edgeface.imageio import is_image_file, load_image

    from .bench_pipelines import BaselinePipeline, compare_on_frames, percentile_summary, time_edgeface_frame

    baseline = BaselinePipeline()
    for person in sorted(p for p in args.people.iterdir() if p.is_dir()):
        for photo in sorted(p for p in person.iterdir() if is_image_file(p)):
            baseline.enrol(person.name, load_image(photo))

    runners = {BASELINE: baseline.time_frame}
    setups = [
        (EDGEFACE_DEFAULT, "dlib", "dlib ResNet fp32"),
        (EDGEFACE_YUNET, "yunet", "dlib ResNet fp32"),
        (EDGEFACE_YUNET_INT8, "yunet", "dlib ResNet int8"),
    ]
    for name, detector, model in setups:
        pipeline = build_pipeline(models[model], detector, args.yunet)
        gallery = enrol_gallery(pipeline, args.people)
        params = voting_params(model)
        runners[name] = lambda frame, p=pipeline, g=gallery, v=params: time_edgeface_frame(p, frame, g, v)

    result = {"pipelines": list(runners), "sets": {}}
    for set_name, (frames, decode_ms) in comparison_frames(args).items():
        summary = compare_on_frames(frames, decode_ms, runners)
        result["sets"][set_name] = {
            "frames": len(frames),
            "decode_ms": percentile_summary(decode_ms),
            "pipelines": summary,
            "ratios": {name: end_to_end_ratio(summary, BASELINE, name) for name in runners if name != BASELINE},
        }
    return result


def run_stage_latency(args: argparse.Namespace, models: dict[str, Path]) -> dict:
    """Time decode and detect per frame, align and embed per face for each model, and search plus vote."""
    from edgeface.detection import DlibDetector, YuNetDetector
    from edgeface.embedding import Embedder

    from .bench_pipelines import milliseconds_since, percentile_summary, time_models_per_face, time_search_and_vote

    sets = comparison_frames(args)
    detectors = {"YuNet": YuNetDetector(args.yunet), "dlib HOG": DlibDetector()}
    detect = {}
    samples = []
    for set_name, (frames, _) in sets.items():
        for label, detector in detectors.items():
            elapsed = []
            for frame in frames:
                start = time.perf_counter()
                faces = detector.detect(frame)
                elapsed.append(milliseconds_since(start))
                if label == "YuNet":
                    samples.extend((frame, face) for face in faces[:1])
            detect[f"{label}, {set_name}"] = percentile_summary(elapsed)

    embedders = {label: Embedder(path, allow_untrained=True) for label, path in models.items()}
    per_model = time_models_per_face(samples, embedders)

    pipeline = build_pipeline(models["dlib ResNet fp32"], "yunet", args.yunet)
    gallery = enrol_gallery(pipeline, args.people)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.queries, gallery.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    search = time_search_and_vote(gallery, queries, voting_params("dlib ResNet fp32"))

    return {
        "decode": {name: percentile_summary(decode_ms) for name, (_, decode_ms) in sets.items()},
        "detect": detect,
        "faces": len(samples),
        "models": per_model,
        "search_vote": search,
        "gallery_vectors": len(gallery),
    }


def run_session_options(args: argparse.Namespace, model: Path) -> dict:
    """Time the dlib fp32 model under each combination of ONNX Runtime session options."""
    from edgeface.detection import YuNetDetector
    from edgeface.embedding import Embedder

    from edgeface.detection import DlibDetector

    from .bench_options import measure_session_options, measure_spinning
    from .bench_pipelines import lfw_sample, read_images, read_video

    detector = YuNetDetector(args.yunet)
    embedder = Embedder(model)
    images, _ = read_images(lfw_sample(args.lfw, 30))
    chips = []
    for image in images:
        faces = detector.detect(image)
        if faces:
            chips.append(embedder.crop(image, faces[0].landmarks, faces[0].box))
    result = measure_session_options(embedder, chips, rounds=5)
    frames, _ = read_video(args.video, limit=60)
    result["spinning"] = measure_spinning(embedder, DlibDetector(), frames[::2], chips[0])
    return result


def run_loops(args: argparse.Namespace, models: dict[str, Path]) -> list[dict]:
    """Run the daemon's per-frame loop over the whole video once per setup, each in its own process."""
    setups = [{"kind": "baseline", "label": BASELINE}]
    setups.append({"kind": "edgeface", "label": EDGEFACE_DEFAULT, "detector": "dlib", "model": str(models["dlib ResNet fp32"]), "threshold": 0.34})
    for label, path in models.items():
        setups.append({"kind": "edgeface", "label": f"edgeface YuNet + {label}", "detector": "yunet", "model": str(path), "threshold": THRESHOLDS.get(label, 0.34)})

    results = []
    for setup in setups:
        setup.update({"video": str(args.video), "people": str(args.people), "yunet": str(args.yunet), "frames": args.loop_frames})
        command = [sys.executable, "-m", "benchmarks.bench", "--loop-child", json.dumps(setup)]
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if finished.returncode != 0:
            results.append({"label": setup["label"], "error": finished.stderr.strip().splitlines()[-1:]})
            continue
        results.append({"label": setup["label"], **json.loads(finished.stdout.strip().splitlines()[-1])})
    return results


def run_scaling(args: argparse.Namespace) -> list[dict]:
    from .bench_gallery import measure_scaling

    sizes = [1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    return measure_scaling(sizes, queries=args.queries, k=voting_params("").k2)


def run_enrolment(args: argparse.Namespace, model: Path) -> dict:
    from .bench_gallery import measure_enrolment

    results = {}
    for detector in ("yunet", "dlib"):
        pipeline = build_pipeline(model, detector, args.yunet)
        # Small galleries get 5 photos per person, as a household enrols; large ones 1, to bound the run time.
        sizes = [(people, 5 if people <= 100 else 1) for people in args.enrol_people]
        results[detector] = measure_enrolment(pipeline, args.lfw, sizes)
    return results


if __name__ == "__main__":
    sys.exit(main())
