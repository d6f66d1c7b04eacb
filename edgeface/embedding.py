"""Face embeddings with ONNX Runtime, driven by a model manifest.

One :class:`Embedder` serves every model. The manifest defines how to crop,
colour-convert and normalise the face, and which tensors to read and write.
Every embedding is L2-normalised as soon as the model returns it, so the
distance between two embeddings is always in 0..2.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .alignment import crop_face
from .errors import ModelError, UntrainedModelError
from .manifest import Manifest, load_manifest

log = logging.getLogger(__name__)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Return ``vectors`` (rows) scaled to unit length; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder:
    """Turns aligned faces into unit-length vectors with one ONNX model.

    :param manifest: a :class:`Manifest`, or the path of a manifest or of the
        ``.onnx`` file beside it.
    :param threads: ONNX Runtime intra-op threads; ``None`` lets ONNX Runtime
        choose (one per core).
    :param allow_untrained: accept a model whose manifest marks it as
        untrained (random weights). Such a model runs but recognises nobody, so by default it
        raises :class:`UntrainedModelError`.
    """

    def __init__(
        self,
        manifest: Manifest | str | os.PathLike[str],
        threads: int | None = None,
        allow_untrained: bool = False,
    ) -> None:
        import onnxruntime

        if not isinstance(manifest, Manifest):
            manifest = load_manifest(manifest)
        self.manifest = manifest

        if not manifest.trained and not allow_untrained:
            raise UntrainedModelError(
                f"model {manifest.name} ({manifest.model_path}) has random weights: it was "
                f"exported with --random-weights to test the export path, and its embeddings "
                f"recognise nobody. Export real weights, or pass --allow-untrained to use it anyway."
            )

        # All graph optimisations and sequential execution were the fastest
        # combination for the dlib model in benchmarks/bench.py (parallel mode
        # was slower at every thread count). They are ONNX Runtime's defaults
        # today and are set here so a change of default cannot slow the door.
        # Idle intra-op threads stop spinning: spinning threads took CPU from
        # the face detector that runs between two embeddings and slowed it.
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(
                str(manifest.model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises several unrelated types
            raise ModelError(f"ONNX Runtime cannot load {manifest.model_path}: {error}") from error

        spec = manifest.input
        self.input_name = spec.name or self.session.get_inputs()[0].name
        self.output_name = manifest.output.name or self.session.get_outputs()[0].name
        names = [i.name for i in self.session.get_inputs()]
        if self.input_name not in names:
            raise ModelError(
                f"manifest {manifest.path} names input {self.input_name!r}, but the model's inputs are {names}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        if self.output_name not in outputs:
            raise ModelError(
                f"manifest {manifest.path} names output {self.output_name!r}, but the model's outputs are {outputs}"
            )

        # Per-channel constants, computed once instead of per frame.
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        self._scale = (1.0 / std).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)
        self._swap_channels = spec.color == "BGR"
        self._nchw = spec.layout == "NCHW"

        self._batch_fixed = _fixed_batch_size(self.session.get_inputs()[0].shape)
        self._check_shapes()

    @property
    def dim(self) -> int:
        """Length of each embedding."""
        return self.manifest.output.dim

    def crop(self, image: np.ndarray, landmarks: np.ndarray | None, box) -> np.ndarray:
        """Return the face crop that this model takes, from an RGB frame."""
        spec = self.manifest.input
        return crop_face(image, landmarks, box, self.manifest.crop, spec.width, spec.height)

    def embed_crops(self, crops: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Return one unit vector per RGB crop, as an ``(n, dim)`` float32 array."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)

        batch = np.asarray(crops, dtype=np.float32)
        if self._swap_channels:
            batch = batch[..., ::-1]
        batch = batch * self._scale + self._offset
        if self._nchw:
            batch = batch.transpose(0, 3, 1, 2)
        batch = np.ascontiguousarray(batch, dtype=np.float32)

        if self._batch_fixed == 1 and len(batch) > 1:
            outputs = [self._run(batch[i : i + 1]) for i in range(len(batch))]
            vectors = np.concatenate(outputs, axis=0)
        else:
            vectors = self._run(batch)
        vectors = vectors.reshape(len(batch), -1)
        if not np.all(np.isfinite(vectors)):
            raise ModelError(
                f"model {self.manifest.name} returned NaN or infinite values: check the manifest's "
                f"input.mean and input.std, or export the model again"
            )
        return l2_normalise(vectors)

    def _check_shapes(self) -> None:
        """Run one grey face and check the input layout and output size against the manifest."""
        spec = self.manifest.input
        grey = np.full((1, spec.height, spec.width, 3), 128, dtype=np.uint8)
        try:
            vectors = self.embed_crops(grey)
        except ModelError:
            raise
        except Exception as error:  # onnxruntime raises several unrelated types
            raise ModelError(
                f"model {self.manifest.model_path} does not take the input that manifest "
                f"{self.manifest.path} describes ({spec.layout} {spec.width}x{spec.height}): {error}"
            ) from error
        if vectors.shape[1] != self.dim:
            raise ModelError(
                f"model {self.manifest.model_path} returns {vectors.shape[1]} values, but manifest "
                f"{self.manifest.path} says output.dim is {self.dim}"
            )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def __repr__(self) -> str:
        spec = self.manifest.input
        return (
            f"<Embedder {self.manifest.name} {spec.width}x{spec.height} {spec.color} "
            f"dim={self.dim} file={Path(self.manifest.model_file).name}>"
        )


def _fixed_batch_size(shape) -> int | None:
    first = shape[0] if shape else None
    return first if isinstance(first, int) else None
