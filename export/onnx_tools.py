"""Export a torch image encoder to ONNX, quantize it to int8 and compare it with torch.

None of these steps is specific to CLIP. The graphs have one input and one
output, and the caller passes their names. Quantization is dynamic or static
QDQ. Parity is the cosine of each ONNX file's embeddings to torch's.

torch, onnx and onnxruntime are imported inside functions, so that importing this
module stays cheap.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeface.errors import ConfigError, ModelError

from .common import cosine_stats, median_ms

# Images per torch and ONNX Runtime call in the parity check.
PARITY_BATCH = 16


class _CalibrationBatches:
    """ONNX Runtime calibration data reader: one preprocessed image per call."""

    def __init__(self, pixels: np.ndarray, input_name: str) -> None:
        self._pixels = pixels
        self._input_name = input_name
        self._index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self._pixels):
            return None
        batch = self._pixels[self._index : self._index + 1]
        self._index += 1
        return {self._input_name: batch}


def export_onnx(
    encoder: Any, image_size: int, path: Path, *, input_name: str, output_name: str, opset: int
) -> None:
    """Export ``encoder`` to a single ONNX file with a dynamic batch dimension.

    Uses torch's dynamo exporter (``torch.export``), the default since PyTorch
    2.9. The TorchScript exporter is deprecated (torch 2.14 warns), it fails on
    MultiheadAttention's fast path, and its graph carries many Constant and
    shape nodes that the dynamo exporter folds away. ``external_data=False``
    keeps the weights inside the ``.onnx`` file.
    """
    import onnx
    import torch

    # torch.export specialises a dimension whose example size is 1, so the
    # example batch has two images.
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1)
    with _mha_fastpath_disabled():
        program = torch.onnx.export(
            encoder,
            (example,),
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            verbose=False,
        )
    model = program.model_proto

    # Protocol buffers cap a single file at 2 GiB, about 530M fp32 parameters.
    if model.ByteSize() >= 2**31:
        raise ModelError(
            f"the fp32 graph is {model.ByteSize() / 2**30:.1f} GiB, above the 2 GiB limit of a "
            f"single ONNX file, so this image tower is too large for this exporter"
        )

    # The names are set here, not through input_names/output_names: the dynamo
    # exporter does not rename an internal value or initializer that already
    # has the requested name (transformers' CLIP has an initializer called
    # "embedding"), which makes an invalid graph.
    _rename_value(model.graph, model.graph.input[0].name, input_name)
    _rename_value(model.graph, model.graph.output[0].name, output_name)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))


@contextlib.contextmanager
def _mha_fastpath_disabled():
    """Run the block with PyTorch's fused MultiheadAttention fast path switched off.

    In eval mode without gradients, ``nn.MultiheadAttention`` runs one fused
    kernel. The TorchScript exporter fails on it (torch 2.14), and the dynamo
    exporter decomposes it, so switching it off keeps the traced code on the
    plain MatMul and Softmax path for both exporters.
    """
    import torch

    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _rename_value(graph: Any, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` in ``graph``, first renaming any other value called ``new``.

    Covers node inputs and outputs, graph inputs and outputs, initializers and
    value_info. The exported graphs have no subgraphs or local functions (the
    exporter's optimiser inlines them); ``onnx.checker`` runs afterwards.
    """
    if old == new:
        return
    names = _value_names(graph)
    if new in names:
        spare = f"{new}_0"
        while spare in names:
            spare += "_0"
        _replace_name(graph, new, spare)
    _replace_name(graph, old, new)


def _value_names(graph: Any) -> set[str]:
    names = {value.name for value in (*graph.input, *graph.output, *graph.value_info)}
    names.update(initializer.name for initializer in graph.initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _replace_name(graph: Any, old: str, new: str) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        if value.name == old:
            value.name = new
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for index, name in enumerate(node.output):
            if name == old:
                node.output[index] = new


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    method: str,
    calibration: np.ndarray | None,
    work_dir: Path,
    *,
    input_name: str,
) -> None:
    """Write an int8 copy of ``fp32_path`` that quantizes only products with a constant weight.

    ``dynamic``: int8 per-channel weights, activations quantized at run time
    (MatMulInteger). ``static``: QDQ nodes with activation ranges from
    ``calibration``, an ``(n, 3, size, size)`` array. In both, MatMuls between
    two activations (attention's query-key and weights-value products),
    LayerNorm, Softmax and GELU stay fp32.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    prepared_path = work_dir / "prepared.onnx"
    # Symbolic shape inference raises a TypeError on these graphs (onnxruntime
    # 1.32), so only ONNX's own shape inference and the graph optimiser run.
    quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=True)
    prepared = onnx.load(str(prepared_path))
    excluded = _activation_matmuls(prepared.graph)

    if method == "dynamic":
        # Dynamic quantization turns Gemm with a constant weight into MatMul
        # first, so attention's output projection is quantized too.
        quantize_dynamic(
            prepared,
            str(int8_path),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True},
        )
    elif method == "static":
        if calibration is None or len(calibration) == 0:
            raise ConfigError("static quantization needs calibration images")
        quantize_static(
            prepared,
            str(int8_path),
            _CalibrationBatches(calibration, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # Static QDQ keeps Gemm as it is, so it is listed to cover the
            # output projection of nn.MultiheadAttention.
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
        )
    else:
        raise ConfigError(f"unknown quantization {method!r}: choose dynamic, static or none")


def _activation_matmuls(graph: Any) -> list[str]:
    """Return the names of MatMuls whose second input is not a constant, naming unnamed nodes first."""
    constants = {initializer.name for initializer in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)

    excluded = []
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] in constants:
            continue
        if not node.name:
            node.name = f"activation_matmul_{index}"
        excluded.append(node.name)
    return excluded


def measure_parity(
    encoder: Any,
    paths: dict[str, Path],
    pixels: np.ndarray,
    threads: int,
    *,
    input_name: str,
    output_name: str,
) -> dict[str, Any]:
    """Return the cosine statistics of each ONNX file's embeddings against torch's."""
    import torch

    with torch.inference_mode():
        reference = _in_batches(lambda batch: encoder(torch.from_numpy(batch)).numpy(), pixels)

    parity: dict[str, Any] = {}
    for precision, path in paths.items():
        session = _onnx_session(path, threads)
        candidate = _in_batches(lambda batch: session.run([output_name], {input_name: batch})[0], pixels)
        parity[precision] = cosine_stats(reference, candidate)
    return parity


def _in_batches(run: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> np.ndarray:
    """Return ``run`` applied to ``pixels`` in batches of ``PARITY_BATCH``, concatenated."""
    return np.concatenate([run(pixels[start : start + PARITY_BATCH]) for start in range(0, len(pixels), PARITY_BATCH)])


def measure_latency(
    encoder: Any,
    paths: dict[str, Path],
    pixels: np.ndarray,
    threads: int,
    repeats: int = 20,
    *,
    input_name: str,
    output_name: str,
) -> dict[str, Any]:
    """Return the median milliseconds per call of torch and each ONNX file on ``pixels``.

    ``pixels`` is one batch, normally of one image; torch runs with
    ``threads`` intra-op threads and so does each ONNX Runtime session.
    """
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batch = torch.from_numpy(pixels)
        with torch.inference_mode():
            latency: dict[str, Any] = {
                "threads": threads,
                "batch": len(pixels),
                "torch": round(median_ms(lambda: encoder(batch), repeats=repeats), 2),
            }
    finally:
        torch.set_num_threads(previous_threads)

    for precision, path in paths.items():
        session = _onnx_session(path, threads)
        feed = {input_name: pixels}
        latency[precision] = round(median_ms(lambda: session.run([output_name], feed), repeats=repeats), 2)
    return latency


def _onnx_session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
