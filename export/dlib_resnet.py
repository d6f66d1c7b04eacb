"""Convert dlib's 128-d face ResNet to ONNX, reading dlib's file format with numpy.

The weights are ``dlib_face_recognition_resnet_model_v1.dat`` (CC0) from the
``face-recognition-models`` package: the network that ``dlib.face_recognition_model_v1``
runs, a 29-convolution ResNet on 150x150 RGB face chips. This command parses
dlib's ``serialize()`` output without importing dlib, rebuilds the network
with ``onnx.helper`` and writes ``dlib_resnet_v1.onnx`` (fp32) and
``dlib_resnet_v1.int8.onnx`` (dynamically quantised), each with its manifest.

When dlib is importable and ``--faces DIR`` names a folder of photos, the
command also cuts dlib face chips from them and prints how closely each ONNX
model's embeddings match dlib's own ``compute_face_descriptor``. The figures
go into the manifests' ``source`` section.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeface.detection import face_recognition_model_path
from edgeface.errors import DetectorError, ModelError
from edgeface.manifest import OutputSpec, manifest_path_for, preset, sha256_file

from .common import cosine_stats, write_manifest

log = logging.getLogger(__name__)

WEIGHTS_NAME = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_NAME = "shape_predictor_5_face_landmarks.dat"
FP32_NAME = "dlib_resnet_v1.onnx"
INT8_NAME = "dlib_resnet_v1.int8.onnx"
# The exported files in the order they are moved into place, each manifest
# before its model.
OUTPUT_NAMES = (manifest_path_for(FP32_NAME).name, FP32_NAME, manifest_path_for(INT8_NAME).name, INT8_NAME)
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
CHIP_SIZE = 150
CHIP_PADDING = 0.25

# Opset 17 and IR version 8 are those of ONNX 1.12 (onnx.helper.VERSION_TABLE),
# kept low so that older onnxruntime builds on the Pi can load the models.
OPSET = 17
IR_VERSION = 8

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


# ---------------------------------------------------------------------------
# dlib's binary serialization (dlib/serialize.h, dlib/cuda/tensor.h)
# ---------------------------------------------------------------------------


class DlibReader:
    """Reader of the primitive values that dlib's ``serialize()`` writes, over a byte string.

    Integers are a control byte (bit 7: negative, low four bits: byte count)
    followed by that many little-endian bytes. Scalar floats are an integer
    mantissa and an integer exponent. Tensors are four sizes followed by raw
    little-endian float32 values.
    """

    # float_details exponents that stand for infinity, -infinity and NaN.
    _SPECIAL_EXPONENTS = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.offset = 0

    def error(self, message: str, offset: int | None = None) -> ModelError:
        offset = self.offset if offset is None else offset
        return ModelError(
            f"{self.name}: invalid dlib model file at byte {offset}: {message}. "
            f"Pass the original {WEIGHTS_NAME} from the face-recognition-models package."
        )

    def read(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise self.error(f"file ends while reading {count} bytes")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def read_int(self, signed: bool = True) -> int:
        control = self.read(1)[0]
        negative = signed and bool(control & 0x80)
        size = control & 0x0F if signed else control & 0x8F
        if not 1 <= size <= 8:
            raise self.error(f"integer control byte 0x{control:02x} is invalid")
        value = int.from_bytes(self.read(size), "little")
        return -value if negative else value

    def read_float(self) -> float:
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent in self._SPECIAL_EXPONENTS:
            return self._SPECIAL_EXPONENTS[exponent]
        return float(np.ldexp(float(mantissa), exponent))

    def read_bool(self) -> bool:
        value = self.read(1)
        if value not in (b"0", b"1"):
            raise self.error(f"boolean byte {value!r} is neither '0' nor '1'")
        return value == b"1"

    def read_string(self) -> str:
        size = self.read_int(signed=False)
        return self.read(size).decode("latin-1")

    def read_tensor(self) -> np.ndarray:
        """Read a ``resizable_tensor`` as a float32 array of shape (n, k, rows, columns)."""
        version = self.read_int()
        if version != 2:
            raise self.error(f"tensor version {version}, expected 2")
        shape = tuple(self.read_int() for _ in range(4))
        if min(shape) < 0:
            raise self.error(f"tensor shape {shape} has a negative size")
        count = math.prod(shape)
        values = np.frombuffer(self.read(4 * count), dtype="<f4")
        return values.reshape(shape).astype(np.float32)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        """Read an ``alias_tensor``: only its shape is stored."""
        version = self.read_int()
        if version != 1:
            raise self.error(f"alias_tensor version {version}, expected 1")
        return tuple(self.read_int() for _ in range(4))


# ---------------------------------------------------------------------------
# The network: anet_type from dlib's tools/python/src/face_recognition.cpp
# ---------------------------------------------------------------------------


@dataclass
class Node:
    """One element of dlib's layer stack, listed from the output down.

    ``kind`` is a dlib layer (``con``, ``affine``, ``relu``, ``max_pool``,
    ``avg_pool``, ``add_prev``, ``fc``, ``input``) or ``tag`` / ``skip``,
    which store or recall the value at a point of the stack. ``tag`` is the
    tag id of ``tag``, ``skip`` and ``add_prev``. ``outputs`` is the filter or
    output count, ``size`` the square kernel side (0: the whole input) and
    ``stride`` the stride. ``values`` receives what the file stores.
    """

    kind: str
    tag: int = 0
    outputs: int = 0
    size: int = 0
    stride: int = 1
    values: dict[str, Any] = field(default_factory=dict)


def _block(filters: int, stride: int) -> list[Node]:
    # dlib: BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>, BN = affine.
    return [
        Node("affine"),
        Node("con", outputs=filters, size=3, stride=1),
        Node("relu"),
        Node("affine"),
        Node("con", outputs=filters, size=3, stride=stride),
    ]


def _residual(filters: int) -> list[Node]:
    # dlib's ares: relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>.
    return [Node("relu"), Node("add_prev", tag=1), *_block(filters, 1), Node("tag", tag=1)]


def _residual_down(filters: int) -> list[Node]:
    # dlib's ares_down: relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>.
    return [
        Node("relu"),
        Node("add_prev", tag=2),
        Node("avg_pool", size=2, stride=2),
        Node("skip", tag=1),
        Node("tag", tag=2),
        *_block(filters, 2),
        Node("tag", tag=1),
    ]


def resnet_nodes() -> list[Node]:
    """Return dlib's face ResNet (``anet_type``) as nodes from the output down to the input."""
    nodes = [Node("fc", outputs=128), Node("avg_pool", size=0, stride=1)]
    nodes += _residual_down(256)
    nodes += _residual(256) + _residual(256) + _residual_down(256)
    nodes += _residual(128) + _residual(128) + _residual_down(128)
    nodes += _residual(64) + _residual(64) + _residual(64) + _residual_down(64)
    nodes += _residual(32) + _residual(32) + _residual(32)
    nodes += [
        Node("max_pool", size=3, stride=2),
        Node("relu"),
        Node("affine"),
        Node("con", outputs=32, size=7, stride=2),
        Node("input", size=CHIP_SIZE),
    ]
    return nodes


@dataclass
class DlibResnet:
    """The parsed network: its nodes (output first) and the input layer's channel means."""

    nodes: list[Node]
    channel_means: list[float]
    margin: float
    distance_threshold: float


def load_dlib_resnet(path: str | os.PathLike[str]) -> DlibResnet:
    """Parse dlib's serialized face ResNet into arrays, checking every layer against ``anet_type``.

    dlib writes a network from the loss layer down: each layer's version number
    comes first, then the layer below it, and only then the layer's own
    parameters. So the file contains all version numbers top-down, followed by
    the parameters bottom-up. Raises :class:`ModelError` naming the byte offset
    when the file does not match, and naming the layer when its parameters or
    the input layer's channel means contain NaN or infinity.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read dlib model {path}: {error}") from error
    reader = DlibReader(data, str(path))

    if reader.read_int() != 1:
        raise reader.error("add_loss_layer version is not 1")
    loss = reader.read_string()
    if loss != "loss_metric_2":
        raise reader.error(f"loss layer is {loss!r}, expected 'loss_metric_2'")
    margin = reader.read_float()
    distance_threshold = reader.read_float()

    nodes = resnet_nodes()
    bottom_version = 0
    for index, node in enumerate(nodes):
        if node.kind == "input":
            continue
        version = reader.read_int()
        if node.kind in ("tag", "skip"):
            expected = (1,)
        elif index == len(nodes) - 2:
            # The lowest add_layer sits directly on the input layer.
            expected = (2, 3)
            bottom_version = version
        else:
            expected = (1, 2)
        if version not in expected:
            raise reader.error(f"node {index} ({node.kind}) has version {version}, expected {expected}")
        node.values["layer_version"] = version

    channel_means = _read_input_layer(reader, nodes[-1])
    layers = [node for node in reversed(nodes[:-1]) if node.kind not in ("tag", "skip")]
    for number, node in enumerate(layers, start=1):
        start = reader.offset
        name = _read_layer(reader, node)
        _check_finite(reader, node, f"layer {number} from the input ({name})", start)
        _read_layer_state(reader, node, on_input=node is nodes[-2], bottom_version=bottom_version)

    if reader.offset != len(data):
        raise reader.error(f"{len(data) - reader.offset} bytes remain after the network")
    return DlibResnet(nodes, channel_means, margin, distance_threshold)


def _read_input_layer(reader: DlibReader, node: Node) -> list[float]:
    name = reader.read_string()
    if name != "input_rgb_image_sized":
        raise reader.error(f"input layer is {name!r}, expected 'input_rgb_image_sized'")
    start = reader.offset
    means = [reader.read_float() for _ in range(3)]
    if not all(math.isfinite(mean) for mean in means):
        raise reader.error(f"the input layer's channel means {means} are not finite, so the file is damaged", start)
    rows = reader.read_int(signed=False)
    columns = reader.read_int(signed=False)
    if (rows, columns) != (node.size, node.size):
        raise reader.error(f"input size {rows}x{columns}, expected {node.size}x{node.size}")
    return means


def _read_layer_state(reader: DlibReader, node: Node, on_input: bool, bottom_version: int) -> None:
    # add_layer's training state after the layer's parameters: three flags,
    # then the gradient and cached-output tensors, which inference ignores.
    for _ in range(3):
        reader.read_bool()
    reader.read_tensor()
    reader.read_tensor()
    if on_input:
        reader.read_tensor()
        if bottom_version >= 3:
            reader.read_int(signed=False)
    elif node.values["layer_version"] == 2:
        reader.read_tensor()


def _check_finite(reader: DlibReader, node: Node, layer: str, offset: int) -> None:
    # NaN or infinite weights make the embeddings NaN or infinite, and
    # onnxruntime 1.32's quantiser stops on NaN with "AssertionError: scale issue".
    count = 0
    for value in node.values.values():
        if isinstance(value, np.ndarray):
            count += int(np.count_nonzero(~np.isfinite(value)))
    if count:
        noun = "value" if count == 1 else "values"
        raise reader.error(f"{layer} contains {count} NaN or infinite parameter {noun}, so the file is damaged", offset)


def _read_layer(reader: DlibReader, node: Node) -> str:
    """Read one layer's parameters into ``node.values`` and return dlib's layer name."""
    name = reader.read_string()
    readers = {
        "con": _read_con,
        "affine": _read_affine,
        "relu": _read_relu,
        "max_pool": _read_pool,
        "avg_pool": _read_pool,
        "add_prev": _read_add_prev,
        "fc": _read_fc,
    }
    readers[node.kind](reader, node, name)
    return name


def _read_con(reader: DlibReader, node: Node, name: str) -> None:
    if name not in ("con_4", "con_5", "con_6"):
        raise reader.error(f"expected a convolution (con_4..con_6), found {name!r}")
    params = reader.read_tensor().reshape(-1)
    filters = reader.read_int()
    rows = reader.read_int()
    columns = reader.read_int()
    stride_y = reader.read_int()
    stride_x = reader.read_int()
    padding_y = reader.read_int()
    padding_x = reader.read_int()
    filter_shape = reader.read_alias_tensor()
    reader.read_alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.read_float()
    use_bias = reader.read_bool() if name in ("con_5", "con_6") else True
    use_relu = reader.read_bool() if name == "con_6" else False

    found = (filters, rows, columns, stride_y, stride_x)
    expected = (node.outputs, node.size, node.size, node.stride, node.stride)
    if found != expected:
        raise reader.error(f"convolution (filters, rows, columns, stride_y, stride_x) is {found}, expected {expected}")

    # Filters are (filters, channels, rows, columns), the layout ONNX Conv
    # takes. The biases follow them in the same parameter tensor.
    weight_count = int(np.prod(filter_shape))
    expected_count = weight_count + (filters if use_bias else 0)
    if params.size != expected_count:
        raise reader.error(f"convolution has {params.size} parameters, expected {expected_count}")
    node.values["weight"] = params[:weight_count].reshape(filter_shape)
    node.values["bias"] = params[weight_count:] if use_bias else np.zeros(filters, np.float32)
    node.values["padding"] = (padding_y, padding_x)
    node.values["relu"] = use_relu


def _read_affine(reader: DlibReader, node: Node, name: str) -> None:
    if name in ("bn_con2", "bn_fc2"):
        raise reader.error(f"found batch normalisation {name!r}, but this exporter reads the inference network, which has affine layers")
    if name not in ("affine_", "affine_2"):
        raise reader.error(f"expected an affine layer, found {name!r}")
    params = reader.read_tensor().reshape(-1)
    gamma_shape = reader.read_alias_tensor()
    reader.read_alias_tensor()
    mode = reader.read_int()
    disabled = reader.read_bool() if name == "affine_2" else False
    if mode != 0:
        raise reader.error(f"affine layer mode {mode}, expected 0 (per channel)")
    channels = int(np.prod(gamma_shape))
    if params.size != 2 * channels:
        raise reader.error(f"affine layer has {params.size} parameters, expected {2 * channels}")
    node.values["gamma"] = params[:channels]
    node.values["beta"] = params[channels:]
    node.values["disabled"] = disabled


def _read_relu(reader: DlibReader, node: Node, name: str) -> None:
    if name not in ("relu_", "relu_2"):
        raise reader.error(f"expected a relu layer, found {name!r}")
    node.values["disabled"] = reader.read_bool() if name == "relu_2" else False


def _read_pool(reader: DlibReader, node: Node, name: str) -> None:
    expected_name = "max_pool_2" if node.kind == "max_pool" else "avg_pool_2"
    if name != expected_name:
        raise reader.error(f"expected {expected_name!r}, found {name!r}")
    rows = reader.read_int()
    columns = reader.read_int()
    stride_y = reader.read_int()
    stride_x = reader.read_int()
    padding_y = reader.read_int()
    padding_x = reader.read_int()
    found = (rows, columns, stride_y, stride_x)
    expected = (node.size, node.size, node.stride, node.stride)
    if found != expected:
        raise reader.error(f"pooling (rows, columns, stride_y, stride_x) is {found}, expected {expected}")
    node.values["padding"] = (padding_y, padding_x)


def _read_add_prev(reader: DlibReader, node: Node, name: str) -> None:
    if name != "add_prev_":
        raise reader.error(f"expected 'add_prev_', found {name!r}")


def _read_fc(reader: DlibReader, node: Node, name: str) -> None:
    if name not in ("fc_2", "fc_3"):
        raise reader.error(f"expected a fully connected layer (fc_2 or fc_3), found {name!r}")
    outputs = reader.read_int(signed=False)
    inputs = reader.read_int(signed=False)
    params = reader.read_tensor().reshape(-1)
    reader.read_alias_tensor()
    reader.read_alias_tensor()
    bias_mode = reader.read_int()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.read_float()
    if name == "fc_3":
        reader.read_bool()
    # bias_mode 1 is dlib's FC_NO_BIAS, the mode of fc_no_bias.
    if outputs != node.outputs or bias_mode != 1:
        raise reader.error(f"fully connected layer has {outputs} outputs and bias mode {bias_mode}, expected {node.outputs} and 1")
    if params.size != inputs * outputs:
        raise reader.error(f"fully connected layer has {params.size} parameters, expected {inputs * outputs}")
    # dlib computes output = input (n x inputs) @ weights (inputs x outputs).
    node.values["weight"] = params.reshape(inputs, outputs)


# ---------------------------------------------------------------------------
# ONNX graph
# ---------------------------------------------------------------------------


class _GraphBuilder:
    """Collects ONNX nodes and initializers while tracking the (channels, rows, columns) shape."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def constant(self, prefix: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def add(self, op: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        from onnx import helper

        output = output or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def _pooled_size(size: int, window: int, stride: int, padding: int) -> int:
    # dlib's pooling and convolution output size (dlib/cuda/cpu_dlib.cpp).
    return 1 + (size + 2 * padding - window) // stride


def build_onnx(net: DlibResnet):
    """Build the ONNX model of the parsed network.

    The input is ``(batch, 3, 150, 150)`` RGB already normalised as dlib's
    input layer does, ``(pixel - channel mean) / 256``. The manifest carries
    that step. Each affine layer is folded into the convolution below it.
    """
    from onnx import TensorProto, helper

    graph = _GraphBuilder()
    value = INPUT_NAME
    shape = (3, CHIP_SIZE, CHIP_SIZE)
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}

    # Walk from the input up, as dlib's forward pass does.
    bottom_up = list(reversed(net.nodes[:-1]))
    index = 0
    while index < len(bottom_up):
        node = bottom_up[index]
        following = bottom_up[index + 1] if index + 1 < len(bottom_up) else None
        index += 1

        if node.kind == "tag":
            tags[node.tag] = (value, shape)
        elif node.kind == "skip":
            value, shape = tags[node.tag]
        elif node.kind == "con":
            affine = following if following is not None and following.kind == "affine" else None
            if affine is not None:
                index += 1
            value, shape = _add_convolution(graph, value, shape, node, affine)
        elif node.kind == "affine":
            value = _add_affine(graph, value, node)
        elif node.kind == "relu":
            if not node.values["disabled"]:
                value = graph.add("Relu", [value])
        elif node.kind in ("max_pool", "avg_pool"):
            value, shape = _add_pool(graph, value, shape, node)
        elif node.kind == "add_prev":
            value, shape = _add_residual(graph, value, shape, *tags[node.tag])
        elif node.kind == "fc":
            flat = graph.add("Flatten", [value], axis=1)
            weight = graph.constant("fc_weight", node.values["weight"])
            value = graph.add("MatMul", [flat, weight], output=OUTPUT_NAME)
            shape = (node.outputs, 1, 1)
        else:
            raise ModelError(f"dlib layer {node.kind!r} has no ONNX conversion")

    if value != OUTPUT_NAME:
        raise ModelError("the dlib network does not end in its fully connected layer")

    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, CHIP_SIZE, CHIP_SIZE])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", shape[0]])]
    onnx_graph = helper.make_graph(graph.nodes, "dlib_resnet_v1", inputs, outputs, graph.initializers)
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edgeface export.dlib_resnet",
        ir_version=IR_VERSION,
    )
    model.doc_string = (
        "dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1.dat, CC0), "
        "converted from dlib's serialized weights. Input: RGB face chips, (pixel - mean) / 256."
    )
    return model


def _add_convolution(graph: _GraphBuilder, value: str, shape, node: Node, affine: Node | None):
    weight = node.values["weight"]
    bias = node.values["bias"]
    # affine(con(x)) = gamma * (W x + b) + beta, so the pair is one convolution
    # with weights gamma * W and bias gamma * b + beta.
    if affine is not None and not affine.values["disabled"]:
        gamma = affine.values["gamma"]
        beta = affine.values["beta"]
        weight = weight * gamma[:, None, None, None]
        bias = bias * gamma + beta
    padding_y, padding_x = node.values["padding"]
    output = graph.add(
        "Conv",
        [value, graph.constant("conv_weight", weight.astype(np.float32)), graph.constant("conv_bias", bias.astype(np.float32))],
        kernel_shape=[node.size, node.size],
        strides=[node.stride, node.stride],
        pads=[padding_y, padding_x, padding_y, padding_x],
    )
    if node.values["relu"]:
        output = graph.add("Relu", [output])
    rows = _pooled_size(shape[1], node.size, node.stride, padding_y)
    columns = _pooled_size(shape[2], node.size, node.stride, padding_x)
    return output, (node.outputs, rows, columns)


def _add_affine(graph: _GraphBuilder, value: str, node: Node) -> str:
    if node.values["disabled"]:
        return value
    gamma = node.values["gamma"].reshape(1, -1, 1, 1)
    beta = node.values["beta"].reshape(1, -1, 1, 1)
    scaled = graph.add("Mul", [value, graph.constant("affine_gamma", gamma)])
    return graph.add("Add", [scaled, graph.constant("affine_beta", beta)])


def _add_pool(graph: _GraphBuilder, value: str, shape, node: Node):
    if node.size == 0:
        # avg_pool_everything: one mean per channel.
        return graph.add("GlobalAveragePool", [value]), (shape[0], 1, 1)
    padding_y, padding_x = node.values["padding"]
    op = "MaxPool" if node.kind == "max_pool" else "AveragePool"
    # dlib averages over the window's part inside the image, which is
    # AveragePool's count_include_pad=0 (the default).
    output = graph.add(
        op,
        [value],
        kernel_shape=[node.size, node.size],
        strides=[node.stride, node.stride],
        pads=[padding_y, padding_x, padding_y, padding_x],
    )
    rows = _pooled_size(shape[1], node.size, node.stride, padding_y)
    columns = _pooled_size(shape[2], node.size, node.stride, padding_x)
    return output, (shape[0], rows, columns)


def _add_residual(graph: _GraphBuilder, value: str, shape, tagged: str, tagged_shape):
    # dlib's add_prev adds tensors of different shapes: the result takes the
    # larger size on each axis and a missing element counts as zero, which is
    # zero padding at the end of each axis (tt::add in dlib/cuda/cpu_dlib.cpp).
    # Here it happens where a downsampling block meets its pooled shortcut:
    # 128 channels of 4x4 against 256 of 3x3, for example.
    target = tuple(max(a, b) for a, b in zip(shape, tagged_shape))
    value = _pad_to(graph, value, shape, target)
    tagged = _pad_to(graph, tagged, tagged_shape, target)
    return graph.add("Add", [value, tagged]), target


def _pad_to(graph: _GraphBuilder, value: str, shape, target) -> str:
    if tuple(shape) == tuple(target):
        return value
    ends = [t - s for s, t in zip(shape, target)]
    pads = np.array([0, 0, 0, 0, 0, *ends], dtype=np.int64)
    return graph.add("Pad", [value, graph.constant("pads", pads)], mode="constant")


# ---------------------------------------------------------------------------
# Files, quantisation and manifests
# ---------------------------------------------------------------------------


def default_weights() -> Path:
    """Return the path of dlib's face ResNet weights in the face-recognition-models package."""
    try:
        return face_recognition_model_path(WEIGHTS_NAME)
    except DetectorError as error:
        raise ModelError(f"{error}, or pass --weights PATH") from error


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Write a dynamically quantised copy: int8 per-channel weights, uint8 activations.

    Dynamic quantisation measures each activation's range per inference, so
    it needs no calibration photos and the exporter stays data-free.

    NOTE: with onnxruntime 1.32 on x86_64 the result runs about 3.7 times
    slower than the fp32 model (benchmarks/dlib_resnet_speed.py). It is
    smaller, not faster, and has not been timed on a Raspberry Pi.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    temporary = int8_path.with_name(int8_path.name + ".tmp")
    # The quantiser logs one line per activation and a pre-processing hint on
    # the root logger. Both are expected here, so they are hidden.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(fp32_path, temporary, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    os.replace(temporary, int8_path)


@dataclass
class ExportResult:
    """The two exported models and the parity figures, if measured."""

    fp32_path: Path
    int8_path: Path
    parity: dict[str, Any] | None


def export(weights: Path, out_dir: Path, faces_dir: Path | None, max_faces: int, skip_parity: bool) -> ExportResult:
    """Convert ``weights`` into ``out_dir`` and, when possible, measure parity with dlib.

    Both models and their manifests are built in a staging folder inside
    ``out_dir`` and moved into place only after every step has succeeded. When
    a step fails, the staging folder and any folders that this call created
    are removed, so ``out_dir`` is left as it was.
    """
    try:
        import onnx
        import onnxruntime.quantization  # noqa: F401 (checked here, used by quantize_int8)
    except ImportError as error:
        raise ModelError(
            f"the dlib-resnet exporter needs onnx and onnxruntime ({error}): "
            f"install them with pip install onnx onnxruntime"
        ) from error

    _check_out_dir(out_dir)
    net = load_dlib_resnet(weights)
    _check_channel_means(net)
    model = build_onnx(net)
    onnx.checker.check_model(model)

    created = _create_folder(out_dir)
    try:
        with tempfile.TemporaryDirectory(prefix=".export-dlib-resnet-", dir=out_dir, ignore_cleanup_errors=True) as name:
            staging = Path(name)
            parity = _write_staged(model, weights, staging, faces_dir, max_faces, skip_parity)
            _move_into_place(staging, out_dir)
    except BaseException:
        _remove_empty_folders(created)
        raise

    fp32_path = out_dir / FP32_NAME
    int8_path = out_dir / INT8_NAME
    log.info("wrote %s and %s", fp32_path, int8_path)
    return ExportResult(fp32_path, int8_path, parity)


def _write_staged(
    model: Any, weights: Path, staging: Path, faces_dir: Path | None, max_faces: int, skip_parity: bool
) -> dict[str, Any] | None:
    """Write both models and their manifests into ``staging`` and return the parity figures, if measured."""
    fp32_path = staging / FP32_NAME
    int8_path = staging / INT8_NAME
    fp32_path.write_bytes(model.SerializeToString())
    quantize_int8(fp32_path, int8_path)

    source = {
        "exporter": "export.dlib_resnet",
        "weights": WEIGHTS_NAME,
        "weights_sha256": sha256_file(weights),
        "package": "face-recognition-models",
        "license": "CC0-1.0",
        "network": "dlib face_recognition_model_v1 (anet_type), 29 convolutions, 128-d output",
        # dlib's examples/dnn_face_recognition_ex.cpp: 99.38 % on LFW with
        # jittered descriptors, 99.13 % without jitter, as edgeface runs it.
        "lfw_accuracy_reported_by_dlib": {"jittered": 0.9938, "no_jitter": 0.9913},
    }
    # The parity check loads the models through their manifests, so these
    # are written first and rewritten with the figures.
    _write_manifests(fp32_path, int8_path, source)

    parity = None
    if skip_parity:
        log.info("parity check skipped (--skip-parity)")
    else:
        parity = measure_parity(fp32_path, int8_path, faces_dir, max_faces)
    if parity is not None:
        print_parity(parity)
        source["parity"] = parity
        _write_manifests(fp32_path, int8_path, source)
    return parity


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Move the staged files into ``out_dir`` in the order of OUTPUT_NAMES.

    A manifest names its model relative to its own folder, so it stays valid
    after the move.

    NOTE: a crash between the renames of a manifest and its model leaves the
    new manifest beside the previous model, which load_manifest rejects with a
    sha256 mismatch until the export is run again. The hidden staging folder
    is then left in ``out_dir`` as well.
    """
    # The data reaches the disk before any rename, so a power cut after a
    # rename cannot leave a file that is empty or partly written.
    for name in OUTPUT_NAMES:
        _fsync(staging / name)
    for name in OUTPUT_NAMES:
        os.replace(staging / name, out_dir / name)
    _fsync(out_dir)


def _fsync(path: Path) -> None:
    # Opening read-only is enough for fsync on Linux, also for a folder.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _create_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents, and return those created, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if os.path.exists(path):
            break
        missing.append(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove_empty_folders(missing)
        raise ModelError(
            f"cannot create output folder {folder}: {error.strerror}. Choose a folder for --out that you can write to"
        ) from error
    return missing


def _remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders``, deepest first, stopping at the first that is missing or not empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _check_out_dir(out_dir: Path) -> None:
    """Raise ModelError when ``out_dir`` cannot hold the export.

    That is when ``out_dir`` or its nearest existing parent is not a folder,
    or when a folder in ``out_dir`` has the name of an output file.
    """
    # The nearest existing path decides, so "--out FILE" and "--out FILE/sub"
    # both fail here. Other problems, such as a folder without write
    # permission, are left to mkdir, whose error export() reports.
    existing = next((path for path in (out_dir, *out_dir.parents) if os.path.exists(path)), None)
    if existing == out_dir and not existing.is_dir():
        raise ModelError(f"output folder {out_dir} exists and is not a folder. Choose a folder for --out")
    if existing is not None and not existing.is_dir():
        raise ModelError(
            f"output folder {out_dir} cannot be created because {existing} is not a folder. Choose a folder for --out"
        )

    for name in OUTPUT_NAMES:
        target = out_dir / name
        if target.is_dir():
            raise ModelError(
                f"{target} is a folder, so the export cannot replace it. "
                f"Move it away or choose another folder for --out"
            )


def _check_channel_means(net: DlibResnet) -> None:
    spec, _ = preset("dlib150")
    stored = np.asarray(net.channel_means, dtype=np.float32)
    if not np.allclose(stored, np.asarray(spec.mean, dtype=np.float32), atol=1e-3):
        raise ModelError(
            f"the dlib model's input means {stored.tolist()} differ from the dlib150 preset's "
            f"{spec.mean}: update the preset in edgeface/manifest.py"
        )


def _write_manifests(fp32_path: Path, int8_path: Path, source: dict[str, Any]) -> None:
    # Names as in docs/manifest.md.
    for path, name, precision in ((fp32_path, "dlib-resnet-v1", "fp32"), (int8_path, "dlib-resnet-v1-int8", "int8")):
        input_spec, crop = preset("dlib150")
        input_spec.name = INPUT_NAME
        details = dict(source, precision=precision)
        if precision == "int8":
            details["quantization"] = "onnxruntime quantize_dynamic, per-channel int8 weights, uint8 activations"
        write_manifest(path, name, input_spec, crop, OutputSpec(name=OUTPUT_NAME, dim=128), True, details)


# ---------------------------------------------------------------------------
# Parity with dlib
# ---------------------------------------------------------------------------


@dataclass
class DlibFace:
    """One face found by dlib: the image path, detector box (x, y, width, height), 5-point shape and 150x150 chip."""

    path: Path
    box: tuple[int, int, int, int]
    points: np.ndarray
    chip: np.ndarray


def dlib_available() -> bool:
    """Return whether the dlib Python module can be imported."""
    return importlib.util.find_spec("dlib") is not None


def image_files(folder: Path) -> list[Path]:
    """Return the image files under ``folder``, recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def find_dlib_faces(paths: list[Path], limit: int, upsample: int = 1) -> list[DlibFace]:
    """Cut dlib face chips from up to ``limit`` images, the largest face of each.

    Faces come from dlib's HOG detector, run on the image upsampled
    ``upsample`` times, and its 5-point shape predictor. Each chip is
    ``dlib.get_face_chip`` with size 150 and padding 0.25, the chip that
    ``compute_face_descriptor`` cuts from a shape. Images without a face are
    skipped.
    """
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(face_recognition_model_path(SHAPE_PREDICTOR_NAME)))
    faces = []
    for path in paths:
        if len(faces) >= limit:
            break
        try:
            image = dlib.load_rgb_image(str(path))
        except RuntimeError as error:
            log.warning("skipped %s: dlib cannot read it as an image: %s", path, error)
            continue
        detections = detector(image, upsample)
        if len(detections) == 0:
            log.debug("no face found in %s", path)
            continue
        box = max(detections, key=lambda rect: rect.area())
        shape = predictor(image, box)
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)
        chip = np.asarray(dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
        faces.append(DlibFace(path, (box.left(), box.top(), box.width(), box.height()), points, chip))
    return faces


def dlib_descriptors(chips: list[np.ndarray]) -> np.ndarray:
    """Return dlib's own 128-d descriptors of 150x150 RGB chips, without jitter."""
    import dlib

    model = dlib.face_recognition_model_v1(str(face_recognition_model_path(WEIGHTS_NAME)))
    return np.array([np.asarray(model.compute_face_descriptor(chip)) for chip in chips], dtype=np.float64)


def measure_parity(fp32_path: Path, int8_path: Path, faces_dir: Path | None, max_faces: int) -> dict[str, Any] | None:
    """Compare both ONNX models with dlib on chips from ``faces_dir``.

    Returns None, after logging why, when no folder is given, dlib is not
    installed or dlib finds no face.
    """
    from edgeface.embedding import Embedder

    if faces_dir is None:
        log.info("parity check skipped: no --faces folder of photos given")
        return None
    if not dlib_available():
        log.info("parity check skipped: dlib is not installed (pip install dlib-bin)")
        return None
    if not faces_dir.is_dir():
        raise ModelError(f"--faces folder {faces_dir} not found")

    faces = find_dlib_faces(image_files(faces_dir), max_faces)
    if not faces:
        log.info("parity check skipped: dlib found no face in the images under %s", faces_dir)
        return None

    import dlib

    chips = [face.chip for face in faces]
    reference = dlib_descriptors(chips)
    result: dict[str, Any] = {"reference": f"dlib {dlib.__version__} compute_face_descriptor(chip)", "faces": len(chips)}
    for precision, path in (("fp32", fp32_path), ("int8", int8_path)):
        embeddings = Embedder(path, threads=None).embed_crops(chips)
        result[precision] = cosine_stats(reference, embeddings)
    return result


def print_parity(parity: dict[str, Any]) -> None:
    """Print the cosine between dlib's descriptors and each model's embeddings."""
    print(f"parity with {parity['reference']} on {parity['faces']} faces (cosine):")
    print(f"  {'model':<6} {'mean':>9} {'min':>9}")
    for precision in ("fp32", "int8"):
        stats = parity[precision]
        print(f"  {precision:<6} {stats['mean']:9.6f} {stats['min']:9.6f}")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``dlib-resnet`` options to ``parser``."""
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help=f"dlib model file (default: {WEIGHTS_NAME} from the installed face-recognition-models package)",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), metavar="DIR", help="output folder (default: models/)")
    parser.add_argument(
        "--faces",
        type=Path,
        metavar="DIR",
        help="folder of photos, searched recursively, for the parity check against dlib; "
        "without it the check is skipped",
    )
    parser.add_argument(
        "--max-faces",
        type=int,
        metavar="N",
        default=50,
        help="number of faces taken from --faces for the parity check (default: 50)",
    )
    parser.add_argument("--skip-parity", action="store_true", help="skip the parity check against dlib")


def run(args: argparse.Namespace) -> int:
    """Export the fp32 and int8 models with their manifests and return the exit status."""
    if args.max_faces < 1:
        raise ModelError(f"--max-faces must be at least 1, not {args.max_faces}")
    if args.faces is not None and not args.faces.is_dir():
        raise ModelError(f"--faces folder {args.faces} not found")
    weights = args.weights if args.weights is not None else default_weights()
    if not weights.is_file():
        raise ModelError(f"dlib model {weights} not found")
    export(weights, args.out, args.faces, args.max_faces, args.skip_parity)
    return 0
