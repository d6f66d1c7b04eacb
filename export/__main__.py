"""Command line of the exporters: ``python -m export clip|dlib-resnet ...``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edgeface.errors import EdgefaceError

# Subcommand name -> module in this package with add_arguments(parser) and run(args).
EXPORTERS = {
    "clip": ("clip", "CLIP's image encoder (open_clip or Hugging Face) to fp32 and int8 ONNX"),
    "dlib-resnet": ("dlib_resnet", "dlib's 128-d face ResNet to fp32 and int8 ONNX, without dlib"),
}


def _own_info_or_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.startswith(("export", "edgeface"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for command, (module_name, help_text) in EXPORTERS.items():
        module = importlib.import_module(f"export.{module_name}")
        modules[command] = module
        module.add_arguments(commands.add_parser(command, help=help_text, description=module.__doc__))

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # open_clip, ONNX Runtime's quantiser and torch's ONNX optimiser log
    # routine INFO lines through the root logger by the hundred, burying the
    # exporters' own progress. Their warnings and errors still pass.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_own_info_or_warning)
    try:
        return modules[args.command].run(args) or 0
    except EdgefaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
