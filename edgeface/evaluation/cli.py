"""The ``edgeface eval`` commands: grid, openset, lfw and scale.

Each command writes its results into ``--out`` (default ``eval-results/<command>``),
with ``run.json`` recording the command line, model fingerprint and detector
settings, and caches embeddings in ``--cache`` (default ``.edgeface-cache``
under the parent of ``--out``, so the commands of one run share it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..config import load_config
from ..errors import EdgefaceError

DEFAULT_OUT = Path("eval-results")


def add_commands(commands) -> None:
    """Add ``eval`` and its sub-commands to the ``edgeface`` command's sub-parsers."""
    evaluate = commands.add_parser("eval", help="measure how well a model and its settings recognise people")
    protocols = evaluate.add_subparsers(dest="protocol", required=True)

    grid = protocols.add_parser("grid", help="closed-set identification over a grid of k1, k2 and threshold")
    _add_split(grid)
    grid.add_argument(
        "--thresholds",
        default="0.50:1.00:0.01",
        metavar="START:STOP:STEP",
        help="threshold grid, Euclidean distance 0..2, stop included (default 0.50:1.00:0.01; "
        "dlib's ResNet needs a lower range such as 0.20:0.70:0.01)",
    )
    grid.set_defaults(handler=_grid)

    openset = protocols.add_parser("openset", help="false accept and false reject rates of enrolled people against strangers")
    _add_split(openset)
    openset.add_argument("--impostors", type=int, default=2000, help="stranger images, one per person, drawn with --seed (0: all; default 2000)")
    openset.add_argument("--seed", type=int, default=0, help="seed of the impostor draw (default 0)")
    openset.add_argument("--thresholds", default="0.005:2.0:0.005", metavar="START:STOP:STEP", help="thresholds of the rate table and curves (default 0.005:2.0:0.005)")
    _add_voting(openset, threshold=True)
    openset.set_defaults(handler=_openset)

    lfw = protocols.add_parser("lfw", help="LFW View 2 verification: 10-fold accuracy and TAR at FAR 0.1 %%")
    lfw.add_argument("data_dir", type=Path, help="LFW folder with pairs.txt and images/")
    lfw.add_argument("--pairs", type=Path, help="pair list (default DATA_DIR/pairs.txt)")
    lfw.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    _add_common(lfw)
    lfw.set_defaults(handler=_lfw)

    scale = protocols.add_parser("scale", help="gallery load time and accuracy against the number of people")
    _add_split(scale)
    scale.add_argument("--sizes", default="10,25,50,100,158", help="gallery sizes in people, comma-separated; sizes above the people available are capped (default 10,25,50,100,158)")
    _add_voting(scale, threshold=True)
    scale.set_defaults(handler=_scale)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help=f"results folder (default {DEFAULT_OUT}/<command>)")
    parser.add_argument("--cache", type=Path, help="embedding cache folder (default .edgeface-cache beside the results folder)")
    parser.add_argument("--no-cache", action="store_true", help="embed every image again and store nothing")
    parser.add_argument("--no-plots", action="store_true", help="write tables only, no PNG plots")
    parser.add_argument("--config", type=Path, help="YAML config file (default: built-in defaults, see config.yaml)")
    parser.add_argument("--detector", choices=("yunet", "dlib"), help="face detector backend (detector.backend)")
    parser.add_argument("--yunet-model", help="YuNet .onnx file (detector.yunet_model)")
    parser.add_argument("--min-face-size", type=int, help="faces smaller than this many pixels are ignored (detector.min_face_size)")
    parser.add_argument("--model", help="embedder .onnx file with its .json manifest beside it (embedder.model)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (embedder.threads)")
    parser.add_argument("--allow-untrained", action="store_true", default=None, help="accept a model exported with random weights (embedder.allow_untrained)")


def _add_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, help="folder of people (one sub-folder each), or the LFW folder holding images/")
    parser.add_argument("--layout", choices=("auto", "flat", "train-val"), default="auto", help="flat: person/image files; train-val: person/train and person/val (default: auto)")
    parser.add_argument("--min-images", type=int, default=10, help="flat layout: people with fewer images are left out (default 10, the lfw-10 split)")
    parser.add_argument("--enrol", type=int, default=5, help="flat layout: images enrolled per person, by sorted file name; the rest are queries (default 5)")
    parser.add_argument("--people", type=int, help="keep only the first N people by sorted name (default: all)")
    _add_common(parser)


def _add_voting(parser: argparse.ArgumentParser, threshold: bool) -> None:
    parser.add_argument("--k1", type=int, help="neighbours that vote first (matching.k1)")
    parser.add_argument("--k2", type=int, help="neighbours searched, and voting when the first k1 tie (matching.k2)")
    if threshold:
        parser.add_argument("--threshold", type=float, help="the operating threshold to report, Euclidean distance 0..2 (matching.threshold)")


def _config(args: argparse.Namespace) -> dict:
    overrides = {
        "detector.backend": args.detector,
        "detector.yunet_model": args.yunet_model,
        "detector.min_face_size": args.min_face_size,
        "embedder.model": args.model,
        "embedder.threads": args.threads,
        "embedder.allow_untrained": args.allow_untrained,
    }
    for name in ("k1", "k2", "threshold"):
        overrides[f"matching.{name}"] = getattr(args, name, None)
    return load_config(args.config, overrides)


def _context(args: argparse.Namespace):
    from .context import Context

    config = _config(args)
    out = args.out if args.out is not None else DEFAULT_OUT / args.protocol
    cache = args.cache if args.cache is not None else out.parent / ".edgeface-cache"
    if args.no_cache:
        cache = None
    return Context.create(config, out, cache, draw=not args.no_plots, command=command_line(args))


def command_line(args: argparse.Namespace) -> str:
    """Return the ``edgeface eval`` command that repeats this run, with every option given."""
    words = ["edgeface", "eval", args.protocol, str(args.data_dir)]
    for key, value in vars(args).items():
        if key in ("handler", "command", "protocol", "data_dir", "verbose") or value is None or value is False:
            continue
        words.append("--" + key.replace("_", "-"))
        if value is not True:
            words.append(str(value))
    return shlex.join(words)


def _thresholds(text: str):
    from .grid import threshold_range

    try:
        start, stop, step = (float(v) for v in text.split(":"))
        return threshold_range(start, stop, step)
    except ValueError as error:
        raise EdgefaceError(f"invalid --thresholds {text!r}: give START:STOP:STEP in Euclidean distance, e.g. 0.50:1.00:0.01 ({error})") from error


def _split(args: argparse.Namespace):
    from .datasets import load_split

    split = load_split(args.data_dir, args.layout, args.min_images, args.enrol)
    if args.people is not None:
        if args.people < 1:
            raise EdgefaceError(f"invalid --people {args.people}: give at least 1")
        split = split.only(set(split.people[: args.people]))
    return split


def _grid(args: argparse.Namespace) -> int:
    from . import grid
    from .report import format_table

    thresholds = _thresholds(args.thresholds)
    split = _split(args)
    context = _context(args)
    result = grid.run(context, split, thresholds)

    enrolled = result.enrolled
    print(f"{split.description}: {len(enrolled.names)} people enrolled, {len(split.queries)} queries")
    _print_failures(enrolled.enrol_failures, "enrolment")
    _print_failures(enrolled.query_failures, "query")
    print()
    print(format_table(result.report, ("class", "precision", "recall", "f1", "support"), percent=("precision", "recall", "f1")))
    print()
    print("performance bands (number of people):")
    print(format_table(result.bands, ("band", "precision", "recall", "f1")))
    print()
    best = result.best
    print(
        f"best row: k1={best['k1']} k2={best['k2']} threshold={best['threshold']:.2f} "
        f"precision {100 * best['precision']:.2f} % recall {100 * best['recall']:.2f} % F1 {100 * best['f1']:.2f} % "
        f"(tp {best['tp']} fp {best['fp']} tn {best['tn']} fn {best['fn']})"
    )
    print(f"results in {context.out}")
    return 0


def _openset(args: argparse.Namespace) -> int:
    from . import openset

    thresholds = _thresholds(args.thresholds)
    split = _split(args)
    context = _context(args)
    result = openset.run(context, split, args.data_dir, args.impostors, args.seed, thresholds, args.min_images)
    print(openset.format_summary(result))
    print(f"results in {context.out}")
    return 0


def _lfw(args: argparse.Namespace) -> int:
    from . import lfw

    context = _context(args)
    summary = lfw.run(context, args.data_dir, args.pairs)
    if args.json:
        keys = ("accuracy_mean", "accuracy_std", "tar_at_far_1e-3", "threshold_mean", "pairs", "failed_detections")
        print(json.dumps({key: summary[key] for key in keys}))
    else:
        print(lfw.format_summary(summary))
        print(f"results in {context.out}")
    return 0


def _scale(args: argparse.Namespace) -> int:
    from . import scale
    from .report import format_table

    try:
        sizes = sorted({int(v) for v in args.sizes.split(",")})
    except ValueError as error:
        raise EdgefaceError(f"invalid --sizes {args.sizes!r}: give whole numbers of people separated by commas, e.g. 10,25,50") from error
    if not sizes or sizes[0] < 1:
        raise EdgefaceError(f"invalid --sizes {args.sizes!r}: every size must be at least 1 person")
    split = _split(args)
    context = _context(args)
    rows = scale.run(context, split, sizes)
    print(format_table(rows, scale.PRINTED, percent=("precision", "recall", "f1")))
    print(f"results in {context.out}")
    return 0


def _print_failures(failures, role: str) -> None:
    if failures:
        print(f"{len(failures)} {role} images without a usable face (listed in failed_images.csv), first: {failures[0][0]}: {failures[0][1]}", file=sys.stderr)
