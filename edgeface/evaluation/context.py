"""The state shared by every protocol: configuration, pipeline, cached embedding and output folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgefaceError
from ..pipeline import Pipeline
from . import plots
from .embeddings import Embedding

log = logging.getLogger(__name__)


@dataclass
class Context:
    """One evaluation run: results go to ``out``, plots only when ``draw`` is true.

    ``command`` is the command line recorded in ``run.json``, and ``started``
    the :func:`time.perf_counter` value at which the run began.
    """

    config: dict
    pipeline: Pipeline
    embedding: Embedding
    out: Path
    draw: bool
    command: str = ""
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def create(cls, config: dict, out: Path, cache_dir: Path | None, draw: bool, command: str = "") -> Context:
        """Build the pipeline from ``config`` and check that ``out`` is a writable folder."""
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise EdgefaceError(f"cannot create the output folder {out}: {error.strerror or error}") from error
        if draw and not plots.available():
            log.warning("matplotlib is not installed, so no plots are drawn: install it with pip install 'edgeface[plots]'")
            draw = False
        pipeline = Pipeline.from_config(config)
        return cls(config, pipeline, Embedding(pipeline, config, cache_dir), out, draw, command)

    def model_label(self) -> str:
        """Return the model and detector as a plot title prefix, marking models with random weights."""
        manifest = self.pipeline.embedder.manifest
        label = f"{manifest.name}, {self.config['detector']['backend']} detector"
        if not manifest.trained:
            label += " (RANDOM WEIGHTS: machinery check only)"
        return label
