"""The ``edgeface`` command: enrol people, identify faces, register models.

Exit status: 0 on success, 1 when some inputs failed (each is reported on
stderr), 2 for an invalid configuration, model, gallery or command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .config import load_config
from .errors import EdgefaceError, ImageError

log = logging.getLogger("edgeface")


def main(argv: list[str] | None = None) -> int:
    # File names that are not valid UTF-8 reach Python as surrogates; print
    # them escaped instead of failing on a strict UTF-8 terminal.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")

    # Ctrl-C ends the process at once, as by default, because an interrupt
    # inside a native library's start-up would otherwise surface as a
    # misleading ImportError. Galleries, reports and the event log are
    # written atomically, and the daemon installs its own SIGINT handler,
    # which releases the relay.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except EdgefaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _build_parser() -> argparse.ArgumentParser:
    from . import demo, doctor, mqtt_cli, sync_command
    from .evaluation import cli as evaluation

    parser = argparse.ArgumentParser(prog="edgeface", description="Face recognition door access for the Raspberry Pi.")
    parser.add_argument("--version", action="version", version=f"edgeface {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    enroll = commands.add_parser("enroll", help="sync a gallery with a folder of people (one sub-folder of photos each)")
    enroll.add_argument("people_dir", type=Path, help="folder with one sub-folder of photos per person")
    _add_common(enroll)
    enroll.set_defaults(handler=_enroll)

    identify = commands.add_parser("identify", help="name every face in one or more images")
    identify.add_argument("images", nargs="+", type=Path, help="image files")
    _add_common(identify)
    identify.add_argument("--json", action="store_true", help="print one JSON object per face per line")
    identify.add_argument("--timings", action="store_true", help="add milliseconds per stage (detect, embed, search)")
    identify.add_argument("--k1", type=int, help="neighbours that vote first (matching.k1)")
    identify.add_argument("--k2", type=int, help="neighbours searched, and voting when the first k1 tie (matching.k2)")
    identify.add_argument("--threshold", type=float, help="maximum Euclidean distance of a vote, 0..2 (matching.threshold)")
    identify.add_argument("--min-votes", type=int, help="fewer votes than this is Unknown (matching.min_votes)")
    identify.add_argument("--margin", type=float, help="Unknown when the runner-up is this close in distance (matching.margin)")
    identify.set_defaults(handler=_identify)

    run = commands.add_parser("run", help="run the door: camera, recognition, relay, events (stops on SIGTERM or Ctrl-C)")
    run.add_argument("--config", type=Path, help="YAML config file (default: built-in defaults, see config.yaml)")
    run.add_argument("--source", help="frames from this instead of camera.source: picamera2, a device number, a URL, a video file or an image folder")
    run.add_argument("--gallery", type=Path, help="gallery folder (gallery.path)")
    run.add_argument("--simulate-relay", action="store_true", default=None, help="drive a simulated relay pin instead of GPIO (door.simulate)")
    run.add_argument("--fast", action="store_true", help="replay a video file or image folder as fast as frames are processed (camera.realtime: false)")
    run.set_defaults(handler=_run)

    demo.add_commands(commands)
    sync_command.add_commands(commands)

    model = commands.add_parser("model", help="manage embedding models")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    register = model_commands.add_parser("register", help="write a manifest for an existing ONNX face model")
    register.add_argument("model", type=Path, help="the .onnx file; the manifest is written beside it as .json")
    register.add_argument("--preset", required=True, choices=("arcface112", "dlib150", "clip224"), help="input size, crop and normalisation of a known model family")
    register.add_argument("--name", help="model name shown in logs (default: the file name)")
    register.add_argument("--mean", help="per-channel mean in 0..255 pixel units, e.g. 127.5,127.5,127.5")
    register.add_argument("--std", help="per-channel standard deviation in 0..255 pixel units, e.g. 128,128,128")
    register.add_argument("--color", choices=("RGB", "BGR"), help="channel order the model expects")
    register.add_argument("--untrained", action="store_true", help="mark the model as having random weights")
    register.set_defaults(handler=_register)
    doctor.add_commands(commands)
    mqtt_cli.add_commands(commands)
    evaluation.add_commands(commands)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", type=Path, required=True, help="gallery folder")
    parser.add_argument("--config", type=Path, help="YAML config file (default: built-in defaults, see config.yaml)")
    parser.add_argument("--detector", choices=("yunet", "dlib"), help="face detector backend (detector.backend)")
    parser.add_argument("--yunet-model", help="YuNet .onnx file (detector.yunet_model)")
    parser.add_argument("--model", help="embedder .onnx file with its .json manifest beside it (embedder.model)")
    parser.add_argument("--allow-untrained", action="store_true", default=None, help="accept a model exported with random weights (embedder.allow_untrained)")


def _config_from(args: argparse.Namespace) -> dict:
    overrides = {
        "detector.backend": args.detector,
        "detector.yunet_model": args.yunet_model,
        "embedder.model": args.model,
        "embedder.allow_untrained": args.allow_untrained,
    }
    for name in ("k1", "k2", "threshold", "min_votes", "margin"):
        overrides[f"matching.{name}"] = getattr(args, name, None)
    return load_config(args.config, overrides)


def _enroll(args: argparse.Namespace) -> int:
    from .enrolment import EnrolmentRules, NothingEnrolledError, sync_gallery
    from .pipeline import Pipeline

    config = _config_from(args)
    pipeline = Pipeline.from_config(config)
    try:
        reports = sync_gallery(args.people_dir, args.gallery, pipeline, EnrolmentRules.from_config(config)).people
    except NothingEnrolledError as error:
        _print_reports(error.reports)
        raise

    _print_reports(reports)
    enrolled = sum(1 for r in reports if r.used)
    print(f"gallery {args.gallery}: {enrolled} {'person' if enrolled == 1 else 'people'} enrolled with model {pipeline.model_name}")
    return 1 if any(r.skipped or r.action == "not enrolled" for r in reports) else 0


def _print_reports(reports) -> None:
    for report in reports:
        line = f"{report.display_name}: {report.action}"
        if report.action == "removed" and report.skipped:
            line += " (no usable photo left)"
        elif report.action != "removed":
            line += f", {report.used} photo{'s' if report.used != 1 else ''} used ({report.embedded} embedded)"
        if report.skipped:
            line += f", {len(report.skipped)} skipped"
        print(line)
        for photo, reason in report.skipped:
            print(f"  skipped {photo}: {reason}")
        for photo, message in report.warnings:
            print(f"  warning {photo}: {message}")


def _identify(args: argparse.Namespace) -> int:
    from .imageio import load_image
    from .pipeline import Pipeline
    from .voting import VotingParams

    config = _config_from(args)
    pipeline = Pipeline.from_config(config)
    gallery = pipeline.load_gallery(args.gallery)
    try:
        params = VotingParams(**config["matching"])
    except ValueError as error:
        raise EdgefaceError(f"invalid matching settings: {error}") from error

    failures = 0
    for path in args.images:
        try:
            image = load_image(path)
        except ImageError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue

        results = pipeline.identify(image, gallery, params)
        timings = pipeline.times.as_dict() if args.timings else None
        if not results:
            print(f"{path}: no face found", file=sys.stderr if args.json else sys.stdout)
            if args.timings and not args.json:
                print(f"  timings: {_format_timings(timings)}")
        for result in results:
            print(_format_result(path, result, args.json, timings))
        if args.timings and not args.json and results:
            print(f"  timings: {_format_timings(timings)}")
    return 1 if failures else 0


def _format_result(path: Path, result, as_json: bool, timings: dict | None) -> str:
    match = result.match
    if as_json:
        record = {
            "image": str(path),
            "box": result.face.int_box(),
            "person": match.person,
            "votes": match.votes,
            "distance": _round(match.distance),
            "runner_up": match.runner_up,
            "runner_up_distance": _round(match.runner_up_distance),
        }
        if timings is not None:
            record["timings"] = timings
        return json.dumps(record, ensure_ascii=False)

    name = match.person if match.known else f"Unknown ({match.reason})"
    line = f"{path}: box={result.face.int_box()} {name} votes={match.votes} distance={_format_distance(match.distance)}"
    if match.runner_up is not None:
        label = "runner-up" if match.known else "nearest"
        line += f" {label}={match.runner_up} ({_format_distance(match.runner_up_distance)})"
    return line


def _format_timings(timings: dict) -> str:
    return ", ".join(f"{key[:-3]} {value:.1f} ms" for key, value in timings.items())


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _format_distance(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _run(args: argparse.Namespace) -> int:
    from .daemon import run_from_config

    overrides = {
        "camera.source": args.source,
        "gallery.path": str(args.gallery) if args.gallery is not None else None,
        "door.simulate": args.simulate_relay,
        "camera.realtime": False if args.fast else None,
    }
    config = load_config(args.config, overrides)
    # journald adds its own timestamps; a terminal gets them from here.
    timestamps = "" if "JOURNAL_STREAM" in os.environ else "%(asctime)s "
    logging.getLogger().handlers.clear()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"{timestamps}%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    return run_from_config(config)


def _register(args: argparse.Namespace) -> int:
    from .registration import register_model

    manifest = register_model(
        args.model,
        preset_name=args.preset,
        name=args.name,
        mean=_parse_triple(args.mean, "--mean"),
        std=_parse_triple(args.std, "--std"),
        color=args.color,
        trained=not args.untrained,
    )
    spec = manifest.input
    print(
        f"wrote {manifest.path}: {manifest.name}, input {spec.name} {spec.width}x{spec.height} "
        f"{spec.color} {spec.layout}, output {manifest.output.name} dim {manifest.output.dim}"
    )
    return 0


def _parse_triple(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise EdgefaceError(f"{option} needs three comma-separated numbers, got {text!r}")
    return values
