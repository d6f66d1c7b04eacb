"""End-to-end tests of ``python -m export clip`` on small CLIP configurations.

The models carry random or locally saved weights, so these tests check the
export path (graph, quantization, parity with torch, manifest), never
recognition accuracy. Parity images are a slice of LFW (Labeled Faces in the
Wild), and the tests skip when those images are absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

for _module in ("torch", "open_clip", "transformers", "onnx", "onnxruntime"):
    pytest.importorskip(_module, reason=f"the CLIP exporter needs {_module} (pip install -e '.[export]')")

import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402

from conftest import LFW, require  # noqa: E402
from edgeface.embedding import Embedder  # noqa: E402
from edgeface.errors import ConfigError, UntrainedModelError  # noqa: E402
from edgeface.manifest import load_manifest  # noqa: E402
from export import clip  # noqa: E402
from export.__main__ import main  # noqa: E402

FACE_COUNT = 12

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

# open_clip ViT: width 64, 2 layers, 2 heads of 32, patch 16 on 64x64 images,
# so 16 patches plus the class token. open_clip always builds a text tower,
# so it gets a tiny one.
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
TINY_LAYERS = 2

# transformers CLIP vision tower of the same shape, with a 24-d projection.
TINY_HF_VISION = {
    "model_type": "clip_vision_model",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 64,
    "patch_size": 16,
    "projection_dim": 24,
}


@pytest.fixture(scope="module")
def faces() -> Path:
    return require(LFW / "images")


def export_args(config: Path, out: Path, faces: Path, *extra: str) -> list[str]:
    return [
        "clip",
        "--config-json",
        str(config),
        "--faces",
        str(faces),
        "--max-images",
        str(FACE_COUNT),
        "--threads",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def open_clip_export(tmp_path_factory, faces) -> Path:
    folder = tmp_path_factory.mktemp("open_clip")
    config = write_json(folder / "tiny-vit.json", TINY_OPEN_CLIP)
    out = folder / "models"
    assert main(export_args(config, out, faces, "--random-weights")) == 0
    return out


@pytest.fixture(scope="module")
def hf_export(tmp_path_factory, faces) -> Path:
    folder = tmp_path_factory.mktemp("hf")
    config = write_json(folder / "tiny-hf-vision.json", TINY_HF_VISION)
    out = folder / "models"
    assert main(export_args(config, out, faces, "--random-weights")) == 0
    return out


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Return the element type of every named tensor, after ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {
        value.name: value.type.tensor_type.elem_type
        for value in (*graph.input, *graph.output, *graph.value_info)
    }
    types.update({initializer.name: initializer.data_type for initializer in graph.initializer})
    return types


def embed_onnx(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"pixel_values": pixels})[0]


def lfw_pixels(source_preprocess, faces: Path) -> np.ndarray:
    return source_preprocess(clip.load_images(faces, FACE_COUNT))


# ---------------------------------------------------------------------------
# open_clip, random weights


def test_open_clip_writes_both_files(open_clip_export):
    names = sorted(path.name for path in open_clip_export.iterdir())
    assert names == [
        "clip-tiny-vit-random.int8.json",
        "clip-tiny-vit-random.int8.onnx",
        "clip-tiny-vit-random.json",
        "clip-tiny-vit-random.onnx",
    ]


def test_open_clip_parity_figures(open_clip_export):
    for manifest_name in ("clip-tiny-vit-random.json", "clip-tiny-vit-random.int8.json"):
        parity = load_manifest(open_clip_export / manifest_name).source["parity"]
        assert parity["images"] == FACE_COUNT
        assert parity["fp32"]["count"] == FACE_COUNT
        assert parity["fp32"]["min"] >= clip.FP32_MIN_COSINE
        assert parity["int8"]["count"] == FACE_COUNT
        assert parity["int8"]["mean"] >= parity["int8"]["min"]
        assert parity["int8"]["min"] >= clip.INT8_WARN_COSINE


def test_open_clip_latency_recorded(open_clip_export):
    latency = load_manifest(open_clip_export / "clip-tiny-vit-random.json").source["latency_ms"]
    assert latency["threads"] == 2
    assert latency["batch"] == 1
    for key in ("torch", "fp32", "int8"):
        assert latency[key] > 0


def test_onnx_graph_input_and_output(open_clip_export):
    model = onnx.load(str(open_clip_export / "clip-tiny-vit-random.onnx"))
    assert len(model.graph.input) == 1
    assert len(model.graph.output) == 1
    assert model.graph.input[0].name == "pixel_values"
    assert model.graph.output[0].name == "embedding"

    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param != ""
    assert [dim.dim_value for dim in dims[1:]] == [3, 64, 64]


def test_onnx_output_unit_length_any_batch(open_clip_export):
    pixels = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    for name in ("clip-tiny-vit-random.onnx", "clip-tiny-vit-random.int8.onnx"):
        embeddings = embed_onnx(open_clip_export / name, pixels)
        assert embeddings.shape == (5, 32)
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_int8_quantizes_only_weight_matmuls(open_clip_export):
    model = onnx.load(str(open_clip_export / "clip-tiny-vit-random.int8.onnx"))
    graph = model.graph
    initializers = {initializer.name: initializer for initializer in graph.initializer}
    counts = Counter(node.op_type for node in graph.node)

    # Per layer: the fused query-key-value projection, the attention output
    # projection and two MLP layers, plus the final image projection.
    assert counts["MatMulInteger"] == 4 * TINY_LAYERS + 1
    assert counts["Gemm"] == 0
    for node in graph.node:
        if node.op_type == "MatMulInteger":
            weight = initializers.get(node.input[1])
            assert weight is not None, f"{node.name}: weight {node.input[1]} is not an initializer"
            assert weight.data_type == onnx.TensorProto.INT8

    # Attention's query-key and weights-value products stay fp32 MatMuls.
    assert counts["MatMul"] == 2 * TINY_LAYERS
    for node in graph.node:
        if node.op_type == "MatMul":
            assert node.input[0] not in initializers
            assert node.input[1] not in initializers


def test_int8_keeps_float_normalisation_ops(open_clip_export):
    fp32 = onnx.load(str(open_clip_export / "clip-tiny-vit-random.onnx"))
    int8 = onnx.load(str(open_clip_export / "clip-tiny-vit-random.int8.onnx"))
    fp32_counts = Counter(node.op_type for node in fp32.graph.node)
    int8_counts = Counter(node.op_type for node in int8.graph.node)
    types = value_types(int8)

    # open_clip's nn.GELU exports as Erf at opset 18.
    for op_type in ("LayerNormalization", "Softmax", "Erf"):
        assert int8_counts[op_type] > 0
        assert int8_counts[op_type] == fp32_counts[op_type]
    for node in int8.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Erf"):
            for name in node.input:
                assert types.get(name) == onnx.TensorProto.FLOAT, f"{node.op_type} input {name}"


def test_manifest_untrained_with_model_preprocessing(open_clip_export):
    for name in ("clip-tiny-vit-random", "clip-tiny-vit-random.int8"):
        manifest = load_manifest(open_clip_export / f"{name}.json")
        assert manifest.name == name
        assert manifest.trained is False
        assert manifest.input.name == "pixel_values"
        assert (manifest.input.width, manifest.input.height) == (64, 64)
        assert manifest.input.color == "RGB"
        np.testing.assert_allclose(manifest.input.mean, [value * 255 for value in OPENAI_MEAN])
        np.testing.assert_allclose(manifest.input.std, [value * 255 for value in OPENAI_STD])
        assert manifest.crop.method == "box"
        assert manifest.crop.interpolation == "bicubic"
        assert manifest.output.name == "embedding"
        assert manifest.output.dim == 32
        assert manifest.source["weights"] == "random"
        assert manifest.source["clip_preprocess"]["mode"] == "shortest"


def test_embedder_rejects_untrained_model(open_clip_export):
    with pytest.raises(UntrainedModelError):
        Embedder(open_clip_export / "clip-tiny-vit-random.int8.json")


def test_embedder_allows_untrained_on_request(open_clip_export):
    embedder = Embedder(open_clip_export / "clip-tiny-vit-random.int8.json", allow_untrained=True)
    crops = np.random.default_rng(1).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    vectors = embedder.embed_crops(crops)
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------
# transformers, random weights


def test_hf_config_export_parity(hf_export):
    parity = load_manifest(hf_export / "clip-tiny-hf-vision-random.json").source["parity"]
    assert parity["fp32"]["min"] >= clip.FP32_MIN_COSINE
    assert parity["int8"]["min"] >= clip.INT8_WARN_COSINE


def test_hf_manifest_from_image_processor(hf_export):
    manifest = load_manifest(hf_export / "clip-tiny-hf-vision-random.int8.json")
    assert manifest.trained is False
    assert (manifest.input.width, manifest.input.height) == (64, 64)
    np.testing.assert_allclose(manifest.input.mean, [value * 255 for value in OPENAI_MEAN])
    np.testing.assert_allclose(manifest.input.std, [value * 255 for value in OPENAI_STD])
    assert manifest.output.dim == 24
    assert manifest.source["library"].startswith("transformers ")


def test_hf_int8_quantizes_projections(hf_export):
    model = onnx.load(str(hf_export / "clip-tiny-hf-vision-random.int8.onnx"))
    counts = Counter(node.op_type for node in model.graph.node)
    # Per layer: separate query, key and value projections, the output
    # projection and two MLP layers, plus the visual projection.
    assert counts["MatMulInteger"] == 6 * TINY_LAYERS + 1
    assert counts["MatMul"] == 2 * TINY_LAYERS
    assert counts["Softmax"] == TINY_LAYERS


# ---------------------------------------------------------------------------
# Local weights: the ONNX model must match the original model that saved them


def test_open_clip_checkpoint_file_matches_original(tmp_path, faces, capsys):
    import open_clip

    config = write_json(tmp_path / "tiny-vit-file.json", TINY_OPEN_CLIP)
    open_clip.add_model_config(config)
    torch.manual_seed(7)
    original = open_clip.create_model("tiny-vit-file").eval()
    checkpoint = tmp_path / "tiny.pt"
    torch.save(original.state_dict(), checkpoint)

    out = tmp_path / "models"
    arguments = export_args(config, out, faces, "--weights", str(checkpoint), "--quantization", "none")
    assert main(arguments) == 0
    assert "trained weights" in capsys.readouterr().out

    manifest = load_manifest(out / "clip-tiny-vit-file-tiny.json")
    assert manifest.trained is True
    assert manifest.source["weights"] == "tiny.pt"
    assert not (out / "clip-tiny-vit-file-tiny.int8.onnx").exists()

    transform = open_clip.image_transform(64, is_train=False)
    pixels = lfw_pixels(lambda images: np.stack([transform(image).numpy() for image in images]), faces)
    with torch.inference_mode():
        expected = original.encode_image(torch.from_numpy(pixels), normalize=True).numpy()
    actual = embed_onnx(manifest.model_path, pixels)
    cosines = (expected * actual).sum(axis=1)
    assert cosines.min() >= clip.FP32_MIN_COSINE


def test_hf_folder_matches_original(tmp_path, faces):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 64,
            "max_position_embeddings": 8,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={key: value for key, value in TINY_HF_VISION.items() if key != "model_type"},
        projection_dim=20,
    )
    torch.manual_seed(11)
    original = CLIPModel(config).eval()
    folder = tmp_path / "clip-tiny-hf"
    original.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    processor.save_pretrained(folder)

    out = tmp_path / "models"
    arguments = [
        "clip",
        "--model",
        str(folder),
        "--faces",
        str(faces),
        "--max-images",
        str(FACE_COUNT),
        "--threads",
        "2",
        "--quantization",
        "none",
        "--out",
        str(out),
    ]
    assert main(arguments) == 0

    manifest = load_manifest(out / "clip-tiny-hf.json")
    assert manifest.trained is True
    assert manifest.output.dim == 20

    images = clip.load_images(faces, FACE_COUNT)
    pixels = np.asarray(processor(images=images, return_tensors="np")["pixel_values"], dtype=np.float32)
    with torch.inference_mode():
        pooled = original.vision_model(pixel_values=torch.from_numpy(pixels)).pooler_output
        expected = torch.nn.functional.normalize(original.visual_projection(pooled), dim=-1).numpy()
    actual = embed_onnx(manifest.model_path, pixels)
    cosines = (expected * actual).sum(axis=1)
    assert cosines.min() >= clip.FP32_MIN_COSINE


# ---------------------------------------------------------------------------
# Static quantization, failures and arguments


def test_static_quantization_keeps_attention_fp32(tmp_path, faces):
    config = write_json(tmp_path / "tiny-vit-static.json", TINY_OPEN_CLIP)
    out = tmp_path / "models"
    arguments = export_args(
        config, out, faces, "--random-weights", "--quantization", "static", "--calibration", str(faces)
    )
    assert main(arguments) == 0

    manifest = load_manifest(out / "clip-tiny-vit-static-random.int8.json")
    assert manifest.source["quantization"]["method"] == "static"
    assert manifest.source["parity"]["fp32"]["min"] >= clip.FP32_MIN_COSINE
    assert manifest.source["parity"]["int8"]["min"] >= clip.INT8_WARN_COSINE

    model = onnx.load(str(manifest.model_path))
    producers = {output: node for node in model.graph.node for output in node.output}
    initializers = {initializer.name for initializer in model.graph.initializer}
    weight_products = 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        sources = [producers[name].op_type if name in producers else "initializer" for name in node.input[:2]]
        second = node.input[1]
        second_is_weight = (
            second in producers
            and producers[second].op_type == "DequantizeLinear"
            and producers[second].input[0] in initializers
        )
        if second_is_weight:
            weight_products += 1
            assert sources[0] == "DequantizeLinear", node.name
        else:
            assert "DequantizeLinear" not in sources, f"{node.name} between activations is quantized"
    assert weight_products == 4 * TINY_LAYERS + 1


def test_fp32_parity_failure_writes_nothing(tmp_path, faces, monkeypatch, capsys):
    # A bound above 1 cannot be met, so the export must stop after the check.
    monkeypatch.setattr(clip, "FP32_MIN_COSINE", 1.5)
    config = write_json(tmp_path / "tiny-vit-fail.json", TINY_OPEN_CLIP)
    out = tmp_path / "models"
    arguments = export_args(config, out, faces, "--random-weights", "--quantization", "none")

    assert main(arguments) == 2
    assert "does not match torch" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--random-weights"], "--faces"),
        (["--random-weights", "--faces", ".", "--quantization", "static"], "--calibration"),
        (["--random-weights", "--faces", ".", "--threads", "0"], "--threads"),
    ],
)
def test_invalid_arguments_rejected(tmp_path, extra, message, capsys):
    config = write_json(tmp_path / "tiny-vit-args.json", TINY_OPEN_CLIP)
    assert main(["clip", "--config-json", str(config), "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_open_clip_name_needs_weights(tmp_path, faces):
    parser = argparse.ArgumentParser()
    clip.add_arguments(parser)
    args = parser.parse_args(["--model", "ViT-B-32", "--faces", str(faces), "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--random-weights"):
        clip.load_source_model(args)


def test_module_import_skips_torch():
    code = (
        "import sys, export.clip; "
        "print(*(name in sys.modules for name in ('torch', 'open_clip', 'transformers')))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert completed.stdout.split() == ["False", "False", "False"]
