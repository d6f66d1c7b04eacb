"""The ``edgeface sync`` command: enrol the people on a USB stick into the configured gallery.

Exit status: 0 when every photo was used, 1 when the gallery was updated but
some files or people were skipped (each is listed), 2 when nothing was
changed (no people folder, no usable photo, invalid config, model or gallery).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import load_config
from .errors import EdgefaceError


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sync`` command to the ``edgeface`` command's sub-parsers."""
    sync = subparsers.add_parser(
        "sync",
        help="mirror the people on an enrolment stick (edgeface/people/<Person Name>/) into the gallery",
    )
    sync.add_argument(
        "source",
        nargs="?",
        type=Path,
        help="the stick's mount point, or its edgeface/people folder (default: enrolment.source)",
    )
    sync.add_argument("--gallery", type=Path, help="gallery folder (default: gallery.path)")
    sync.add_argument("--config", type=Path, help="YAML config file (default: built-in defaults, see config.yaml)")
    sync.add_argument("--detector", choices=("yunet", "dlib"), help="face detector backend (detector.backend)")
    sync.add_argument("--yunet-model", help="YuNet .onnx file (detector.yunet_model)")
    sync.add_argument("--model", help="embedder .onnx file with its .json manifest beside it (embedder.model)")
    sync.add_argument(
        "--remove-everyone",
        action="store_true",
        help="allow a sync that leaves no enrolled person (same as the file edgeface/REMOVE-EVERYONE on the stick)",
    )
    sync.add_argument("--no-report", action="store_true", help="do not write edgeface/report.txt on the stick")
    sync.add_argument("--json", action="store_true", help="print the report as one JSON object instead of text")
    sync.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``edgeface sync`` and return its exit status."""
    from .enrolment import EnrolmentRules
    from .pipeline import Pipeline
    from .sync import SyncError, sync_stick

    config = load_config(
        args.config,
        {
            "detector.backend": args.detector,
            "detector.yunet_model": args.yunet_model,
            "embedder.model": args.model,
            "gallery.path": str(args.gallery) if args.gallery is not None else None,
        },
    )
    source = args.source if args.source is not None else config["enrolment"]["source"]
    if source is None:
        raise EdgefaceError("no source folder: give the stick's mount point, or set enrolment.source in the config")

    pipeline = Pipeline.from_config(config)
    try:
        report = sync_stick(
            source,
            config["gallery"]["path"],
            pipeline,
            EnrolmentRules.from_config(config),
            allow_remove_everyone=args.remove_everyone,
            write_report=not args.no_report,
        )
    except SyncError as error:
        report = error.report
        print(f"error: {error}", file=sys.stderr)
    if args.config is not None:
        _record_event(config, report)
    print(json.dumps(report.as_dict(), ensure_ascii=False) if args.json else report.as_text(), end="\n" if args.json else "")
    return report.exit_status


def _record_event(config: dict, report) -> None:
    """Record the report as a ``sync`` event in the door's event log, from which MQTT publishes it."""
    from .events import EventLog

    try:
        events = EventLog.from_config(config)
        try:
            events.record("sync", report.as_dict())
        finally:
            events.close()
    except EdgefaceError as error:
        print(f"warning: the sync report was not recorded in the event log: {error}", file=sys.stderr)
