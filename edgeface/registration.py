"""Registering an existing ONNX face model: check its shapes, then write its manifest.

The dry run loads the model in ONNX Runtime and checks that its first input
is a 4-D image tensor whose fixed dimensions agree with the preset's size.
It then runs one grey face through it and reads the embedding dimension off
the output.
Only then is the manifest written, so a manifest always describes a model
that ran.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import ModelError
from .embedding import Embedder
from .manifest import Manifest, OutputSpec, manifest_path_for, preset, save_manifest, sha256_file, validate

log = logging.getLogger(__name__)


def register_model(
    model_path: str | Path,
    preset_name: str,
    name: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    color: str | None = None,
    trained: bool = True,
) -> Manifest:
    """Check an ONNX model against a preset and write ``model.json`` beside it.

    Raises :class:`ModelError` when the file is missing or not a valid ONNX
    model, or when its input or output shape does not fit the preset.
    """
    import onnxruntime

    model_path = Path(model_path)
    if model_path.suffix != ".onnx":
        raise ModelError(f"{model_path} is not an .onnx file: register the ONNX model, and its manifest is written beside it")
    if not model_path.is_file():
        raise ModelError(f"model file not found: {model_path}")
    input_spec, crop = preset(preset_name)
    if mean is not None:
        input_spec.mean = mean
    if std is not None:
        input_spec.std = std
    if color is not None:
        input_spec.color = color

    try:
        session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several unrelated types
        raise ModelError(f"ONNX Runtime cannot load {model_path}: {error}") from error

    model_input = session.get_inputs()[0]
    input_spec.name = model_input.name
    input_spec.layout = _layout_of(model_input.shape, input_spec.width, input_spec.height, model_path, preset_name)

    if input_spec.layout == "NCHW":
        shape = (1, 3, input_spec.height, input_spec.width)
    else:
        shape = (1, input_spec.height, input_spec.width, 3)
    grey = np.zeros(shape, dtype=np.float32)
    model_output = session.get_outputs()[0]
    try:
        result = session.run([model_output.name], {model_input.name: grey})[0]
    except Exception as error:  # onnxruntime raises several unrelated types
        raise ModelError(f"dry run of {model_path} with input shape {shape} failed: {error}") from error

    if result.ndim != 2 or result.shape[0] != 1:
        raise ModelError(
            f"{model_path}: output {model_output.name!r} has shape {list(result.shape)}, "
            f"expected [batch, dim]: register the model's embedding output"
        )
    if not np.all(np.isfinite(result)):
        raise ModelError(f"{model_path}: the dry run returned NaN or infinite values")

    manifest = Manifest(
        name=name or model_path.stem,
        model_file=model_path.name,
        sha256=sha256_file(model_path),
        input=input_spec,
        crop=crop,
        output=OutputSpec(name=model_output.name, dim=int(result.shape[1])),
        trained=trained,
        source={"registered_with_preset": preset_name},
    )
    validate(manifest, where=f"model {model_path}")
    _check_embeddings_vary(manifest, model_path)
    save_manifest(manifest, manifest_path_for(model_path))
    log.info("registered %s: dim %d", model_path, manifest.output.dim)
    return manifest


def _check_embeddings_vary(manifest: Manifest, model_path: Path) -> None:
    """Raise :class:`ModelError` unless two different faces give two different unit vectors.

    Catches normalisation that erases the input (a huge ``std``, for
    example), which would make every face match every other.
    """
    manifest.path = model_path.with_suffix(".json").resolve()
    embedder = Embedder(manifest, allow_untrained=True)
    rng = np.random.default_rng(0)
    spec = manifest.input
    faces = rng.integers(0, 256, size=(2, spec.height, spec.width, 3), dtype=np.uint8)
    vectors = embedder.embed_crops(faces)
    if np.linalg.norm(vectors[0] - vectors[1]) < 1e-4:
        raise ModelError(
            f"{model_path}: two different images give the same embedding with mean {spec.mean} and "
            f"std {spec.std}: check --mean and --std (in 0..255 pixel units)"
        )


def _layout_of(shape: list, width: int, height: int, model_path: Path, preset_name: str) -> str:
    """Return NCHW or NHWC from a 4-D input shape whose fixed sizes fit the preset."""
    if len(shape) != 4:
        raise ModelError(f"{model_path}: input shape {shape} is not a 4-D image batch")

    def fits(dims: list, expected: list) -> bool:
        return all(not isinstance(d, int) or d == e for d, e in zip(dims, expected))

    if fits(shape[1:], [3, height, width]):
        return "NCHW"
    if fits(shape[1:], [height, width, 3]):
        return "NHWC"
    raise ModelError(
        f"{model_path}: input shape {shape} does not fit preset {preset_name} "
        f"({width}x{height}, 3 channels): choose the preset of this model's family"
    )
