"""Export CLIP's image encoder to fp32 and int8 ONNX, checked against the source model.

The exported graph is the image tower with its projection, followed by an L2
normalisation, so its output ``embedding`` is a unit vector. Its input
``pixel_values`` has a fixed square size and a dynamic batch. Models come from
open_clip (a built-in name such as ``ViT-B-32``, ``local-dir:DIR`` or
``hf-hub:REPO``) or from Hugging Face transformers (``hf:ID``, a hub id or a
local folder), or from a JSON architecture file (``--config-json``).

Each export embeds real face images with the torch model and with each ONNX
file, after the model's own preprocessing, and fails when the fp32 file's
minimum cosine to torch is below 0.9999. The cosines and a latency report are
printed and stored in each manifest's ``source``.

torch, open_clip and transformers are imported inside functions, so that
importing this module (as ``python -m export --help`` does) stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeface.errors import ConfigError, ModelError
from edgeface.manifest import InputSpec, OutputSpec, preset

from . import onnx_tools
from .common import load_images, write_manifest

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "embedding"

# torch's ONNX exporter (dynamo=True) translates to opset 18 natively; any
# other opset goes through a version conversion afterwards. edgeface requires
# onnxruntime>=1.17, which runs opset 18.
OPSET = 18

# The fp32 graph only reorders float operations, so its cosine to torch stays
# far above this bound. A lower cosine means a wrong graph, and the export fails.
FP32_MIN_COSINE = 0.9999
# Below this minimum cosine to torch, the int8 model gets a warning.
INT8_WARN_COSINE = 0.99

# PIL resampling codes, as Hugging Face image processors store them.
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


@dataclass
class SourceModel:
    """A loaded CLIP image encoder and the facts the export records about it."""

    name: str
    # torch.nn.Module mapping (n, 3, size, size) pixel values to unit-length embeddings.
    encoder: Any
    # The model's own preprocessing: a list of RGB PIL images to an (n, 3, size, size) float32 array.
    preprocess: Callable[[list[Any]], np.ndarray]
    image_size: int
    # Normalisation in 0..1 units, RGB order.
    mean: list[float]
    std: list[float]
    interpolation: str
    resize: dict[str, Any]
    embed_dim: int
    trained: bool
    description: dict[str, Any]


@dataclass
class ExportResult:
    """Files written by one export and the figures measured on them."""

    fp32_path: Path
    int8_path: Path | None
    parity: dict[str, Any]
    latency: dict[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``python -m export clip`` to ``parser``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        help="open_clip model name (ViT-B-32, ViT-B-16, ...), open_clip's local-dir:DIR or "
        "hf-hub:REPO, or a Hugging Face CLIP model: hf:ID, a hub id such as "
        "openai/clip-vit-base-patch32, or a local folder with config.json",
    )
    source.add_argument(
        "--config-json",
        type=Path,
        metavar="FILE",
        help="architecture from a JSON file instead of --model: an open_clip model config "
        "(keys embed_dim, vision_cfg, text_cfg) or a Hugging Face CLIP config.json "
        "(model_type clip or clip_vision_model). Used for tests and custom sizes.",
    )

    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        help="for open_clip: a pretrained tag such as openai or laion2b_s34b_b79k "
        "(downloaded, so it needs a network) or a local checkpoint file. For Hugging Face: "
        "a local folder or hub id to load the weights from, instead of --model.",
    )
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="export random weights (seed 0) to test the export path. The manifest sets "
        "trained: false, and edgeface rejects the model unless --allow-untrained is given.",
    )

    parser.add_argument("--out", type=Path, default=Path("models"), help="output folder (default: models/)")
    parser.add_argument("--name", help="file and manifest name stem (default: derived from model and weights)")
    parser.add_argument(
        "--faces",
        type=Path,
        metavar="DIR",
        help="folder of real face images for the parity check, searched recursively "
        "(default: the --calibration folder)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="folder of face images for static quantization, searched recursively",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=100,
        help="maximum images read from each folder, spread evenly over its sorted files (default: 100)",
    )
    parser.add_argument(
        "--quantization",
        choices=("dynamic", "static", "none"),
        default="dynamic",
        help="int8 model: dynamic (int8 MatMul weights, activations quantized at run time; "
        "the default), static (QDQ with ranges from --calibration) or none (fp32 only)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="threads for torch and ONNX Runtime in the parity check and latency report "
        "(default: one per CPU core)",
    )
    parser.add_argument(
        "--box-scale",
        type=float,
        default=preset("clip224")[1].box_scale,
        help="side of the square face crop as a multiple of the detector box's longer side, "
        "written to the manifest (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Export the model that ``args`` names, print the report and return 0."""
    _check_arguments(args)
    source = load_source_model(args)
    result = export_model(source, args)
    print(format_report(source, result))
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    if args.quantization == "static" and args.calibration is None:
        raise ConfigError("--quantization static needs --calibration DIR, a folder of face images")
    if args.faces is None and args.calibration is None:
        raise ConfigError(
            "the parity check needs real face images: pass --faces DIR (or --calibration DIR)"
        )
    if args.max_images < 1:
        raise ConfigError(f"--max-images must be at least 1, not {args.max_images}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {args.threads}")
    if not 0.5 <= args.box_scale <= 4.0:
        raise ConfigError(f"--box-scale {args.box_scale} is out of range 0.5..4.0")


# ---------------------------------------------------------------------------
# Loading the source model


def load_source_model(args: argparse.Namespace) -> SourceModel:
    """Load the torch model that ``args`` names, with its preprocessing and metadata."""
    backend, identifier = _resolve_backend(args)
    if backend == "open_clip":
        source = _load_open_clip(args, identifier)
    else:
        source = _load_hugging_face(args, identifier)
    if args.name:
        source.name = _slug(args.name)
    if not source.trained:
        log.warning(
            "model %s has random weights: it is for testing the export path and recognises nobody",
            source.name,
        )
    return source


def _resolve_backend(args: argparse.Namespace) -> tuple[str, str]:
    """Return ``("open_clip" | "hf", identifier)`` for ``--model`` or ``--config-json``."""
    if args.config_json is not None:
        config = _read_json(args.config_json)
        if "model_type" in config:
            return "hf", str(args.config_json)
        if {"embed_dim", "vision_cfg", "text_cfg"} <= config.keys():
            return "open_clip", str(args.config_json)
        raise ConfigError(
            f"{args.config_json} is neither an open_clip model config (embed_dim, vision_cfg, "
            f"text_cfg) nor a Hugging Face config (model_type). For an open_clip folder with "
            f"open_clip_config.json, pass --model local-dir:FOLDER."
        )

    import open_clip

    model = args.model
    if model.startswith("hf:"):
        return "hf", model[len("hf:") :]
    if model.startswith(("local-dir:", "hf-hub:")):
        return "open_clip", model
    if model.replace("/", "-") in open_clip.list_models():
        return "open_clip", model.replace("/", "-")
    folder = Path(model)
    if folder.is_dir():
        if (folder / "open_clip_config.json").is_file():
            return "open_clip", f"local-dir:{folder}"
        if (folder / "config.json").is_file():
            return "hf", model
        raise ConfigError(f"folder {folder} has neither open_clip_config.json nor config.json")
    if "/" in model:
        return "hf", model
    raise ConfigError(
        f"unknown model {model!r}: expected an open_clip name (open_clip.list_models(), "
        f"e.g. ViT-B-32), hf:ID, a Hugging Face id such as openai/clip-vit-base-patch32, "
        f"or a local folder"
    )


def _load_open_clip(args: argparse.Namespace, identifier: str) -> SourceModel:
    import open_clip
    import torch

    if args.config_json is not None:
        identifier = _register_open_clip_config(args.config_json)
    schema = identifier.split(":", 1)[0] if identifier.startswith(("local-dir:", "hf-hub:")) else None

    create_options: dict[str, Any] = {}
    if args.random_weights:
        weights_label = "random"
        torch.manual_seed(0)
        create_options.update(pretrained=None, load_weights=False)
    elif schema is not None:
        location = identifier.split(":", 1)[1]
        if args.weights:
            raise ConfigError(
                f"{identifier} carries its own weights; drop --weights, or pass --random-weights"
            )
        if schema == "local-dir" and not _has_open_clip_checkpoint(Path(location)):
            raise ModelError(
                f"no checkpoint (.safetensors, .bin or .pth) in {location}: add one, or pass "
                f"--random-weights to export untrained weights"
            )
        weights_label = location if schema == "hf-hub" else Path(location).name
        create_options.update(require_pretrained=True)
    else:
        weights_label = _open_clip_weights(identifier, args.weights, create_options)

    try:
        model = open_clip.create_model(identifier, **create_options)
    except (RuntimeError, OSError, ValueError) as error:
        reason = str(error).rstrip(".")
        raise ModelError(
            f"open_clip cannot create {identifier} with weights {weights_label}: {reason}. A "
            f"pretrained tag needs a network; offline, pass a checkpoint file with --weights FILE."
        ) from error
    model.eval()

    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    image_size = _square_size(preprocess_cfg["size"], identifier)
    interpolation = preprocess_cfg.get("interpolation", "bicubic")
    transform = open_clip.image_transform(
        image_size,
        is_train=False,
        mean=preprocess_cfg["mean"],
        std=preprocess_cfg["std"],
        interpolation=interpolation,
        resize_mode=preprocess_cfg.get("resize_mode", "shortest"),
        fill_color=preprocess_cfg.get("fill_color", 0),
    )

    def preprocess(images: list[Any]) -> np.ndarray:
        return np.stack([transform(image).numpy() for image in images]).astype(np.float32)

    encoder = _normalised_encoder(model.visual, lambda tower, pixels: tower(pixels))
    model_name = identifier if args.config_json is None else args.config_json.name
    return SourceModel(
        name=_default_name(identifier, "" if schema is not None else weights_label),
        encoder=encoder,
        preprocess=preprocess,
        image_size=image_size,
        mean=[float(value) for value in preprocess_cfg["mean"]],
        std=[float(value) for value in preprocess_cfg["std"]],
        interpolation=_manifest_interpolation(interpolation),
        resize={
            "mode": preprocess_cfg.get("resize_mode", "shortest"),
            "size": image_size,
            "interpolation": interpolation,
        },
        embed_dim=_embedding_dim(encoder, image_size),
        trained=not args.random_weights,
        description={
            "library": f"open_clip {open_clip.__version__}",
            "model": model_name,
            "weights": weights_label,
        },
    )


def _register_open_clip_config(path: Path) -> str:
    """Add an open_clip model config file to open_clip's registry; return its model name."""
    import open_clip

    name = path.stem
    config = _read_json(path)
    registered = open_clip.get_model_config(name)
    if registered is not None and registered != config:
        raise ConfigError(
            f"{path}: open_clip already has a model called {name!r} with another configuration; "
            f"rename the file"
        )
    open_clip.add_model_config(path)
    return name


def _open_clip_weights(name: str, weights: str | None, create_options: dict[str, Any]) -> str:
    """Fill ``create_options`` for a pretrained tag or checkpoint file; return the weights label."""
    import open_clip

    if not weights:
        raise ConfigError(
            f"open_clip model {name} needs --weights (a pretrained tag such as "
            f"{_example_tags(name)}, or a checkpoint file), or --random-weights"
        )

    tag_config = open_clip.get_pretrained_cfg(name, weights)
    if tag_config:
        # NOTE: downloads (pretrained tags, hf-hub: and transformers hub ids) have
        # not run in the tests, which have no network. Local files, folders and
        # random weights have.
        # Some tags were trained with QuickGELU, which the plain config lacks (ViT-B-32
        # with openai weights). open_clip only warns, so the model is built with
        # QuickGELU here. The parity check cannot catch a wrong activation, because
        # torch and ONNX would share it.
        model_config = open_clip.get_model_config(name) or {}
        if tag_config.get("quick_gelu", False) and not model_config.get("quick_gelu", False):
            log.info("weights %s were trained with QuickGELU; building %s with QuickGELU", weights, name)
            create_options["force_quick_gelu"] = True
        create_options.update(pretrained=weights, require_pretrained=True)
        return weights

    if Path(weights).is_file():
        # NOTE: a checkpoint file carries no preprocessing or activation settings,
        # so open_clip's defaults apply (OpenAI mean and std, bicubic, shortest
        # side, plain GELU). OpenAI's weights need the -quickgelu model name, and
        # other training settings need an open_clip folder (--model local-dir:DIR).
        create_options.update(pretrained=str(weights), require_pretrained=True)
        return Path(weights).name

    raise ConfigError(
        f"--weights {weights!r} is neither a pretrained tag of {name} nor an existing file; "
        f"tags: {_example_tags(name)}"
    )


def _example_tags(name: str) -> str:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    return ", ".join(tags) if tags else "(none listed)"


def _has_open_clip_checkpoint(folder: Path) -> bool:
    return any(folder.glob(pattern) for pattern in ("*.safetensors", "*.bin", "*.pth"))


def _load_hugging_face(args: argparse.Namespace, identifier: str) -> SourceModel:
    import torch
    import transformers
    from transformers import CLIPVisionModelWithProjection

    config_only = args.config_json is not None
    if config_only and not args.random_weights:
        raise ConfigError(
            "a Hugging Face --config-json has no weights: add --random-weights, or pass the "
            "model folder as --model"
        )
    # Configuration, weights and image processor all come from --weights when it
    # is given, so --model hf:ID --weights FOLDER works offline.
    weights_source = args.weights or identifier
    vision_config = _hf_vision_config(weights_source, from_file=config_only)

    if args.random_weights:
        torch.manual_seed(0)
        model = CLIPVisionModelWithProjection(vision_config)
        weights_label = "random"
    else:
        try:
            model, loading = CLIPVisionModelWithProjection.from_pretrained(
                weights_source, config=vision_config, output_loading_info=True
            )
        except (OSError, ValueError) as error:
            reason = str(error).rstrip(".")
            raise ModelError(
                f"transformers cannot load CLIP weights from {weights_source}: {reason}. A hub "
                f"id needs a network; offline, pass a local folder."
            ) from error
        if loading.get("missing_keys"):
            missing = sorted(loading["missing_keys"])
            raise ModelError(
                f"{weights_source} has no values for {len(missing)} parameters of the image "
                f"encoder (first: {missing[0]}), so they would stay random. Pass a CLIP "
                f"checkpoint with the vision tower and visual_projection."
            )
        weights_label = weights_source
    model.eval()

    image_size = _square_size(vision_config.image_size, identifier)
    if config_only:
        processor = _default_hf_processor(image_size)
    else:
        processor = _hf_processor(weights_source, image_size)
    crop = processor.crop_size if processor.do_center_crop else None
    if crop is not None and (crop["height"], crop["width"]) != (image_size, image_size):
        raise ModelError(
            f"{identifier}: the image processor crops {crop['width']}x{crop['height']}, but the "
            f"model takes {image_size}x{image_size}"
        )
    if not (processor.do_rescale and processor.do_normalize and abs(processor.rescale_factor * 255 - 1) < 1e-6):
        raise ModelError(
            f"{identifier}: the image processor does not scale pixels by 1/255 and then normalise "
            f"with mean and std, which is the only input rule an edgeface manifest can state"
        )
    interpolation = _PIL_RESAMPLE.get(int(processor.resample), "bicubic")

    def preprocess(images: list[Any]) -> np.ndarray:
        return np.asarray(processor(images=images, return_tensors="np")["pixel_values"], dtype=np.float32)

    encoder = _normalised_encoder(model, lambda tower, pixels: tower(pixel_values=pixels).image_embeds)
    # A transformers id or folder names its weights, so only random weights get a suffix.
    model_name = identifier if not config_only else Path(identifier).name
    return SourceModel(
        name=_default_name(model_name, "random" if args.random_weights else ""),
        encoder=encoder,
        preprocess=preprocess,
        image_size=image_size,
        mean=[float(value) for value in processor.image_mean],
        std=[float(value) for value in processor.image_std],
        interpolation=_manifest_interpolation(interpolation),
        resize={
            "mode": "shortest" if "shortest_edge" in processor.size else "squash",
            "size": processor.size.get("shortest_edge", image_size),
            "centre_crop": crop is not None,
            "interpolation": interpolation,
        },
        embed_dim=_embedding_dim(encoder, image_size),
        trained=not args.random_weights,
        description={
            "library": f"transformers {transformers.__version__}",
            "model": model_name,
            "weights": Path(weights_label).name if Path(weights_label).exists() else weights_label,
        },
    )


def _hf_vision_config(identifier: str, from_file: bool):
    """Return a ``CLIPVisionConfig`` whose ``projection_dim`` matches the full model's."""
    from transformers import AutoConfig, CLIPConfig, CLIPVisionConfig

    if from_file:
        data = _read_json(Path(identifier))
        kind = data.get("model_type")
        if kind == "clip":
            config = CLIPConfig.from_dict(data)
        elif kind == "clip_vision_model":
            config = CLIPVisionConfig.from_dict(data)
        else:
            raise ConfigError(f"{identifier}: model_type {kind!r} is not clip or clip_vision_model")
    else:
        try:
            config = AutoConfig.from_pretrained(identifier)
        except (OSError, ValueError) as error:
            reason = str(error).rstrip(".")
            raise ModelError(
                f"transformers cannot read the configuration of {identifier}: {reason}. A hub "
                f"id needs a network; offline, pass a local folder."
            ) from error

    if isinstance(config, CLIPConfig):
        # A full CLIP config keeps projection_dim at the top level, not in vision_config.
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        return vision
    if isinstance(config, CLIPVisionConfig):
        return config
    raise ModelError(f"{identifier} is a {type(config).__name__}, not a CLIP model")


def _hf_processor(source: str, image_size: int):
    from transformers import CLIPImageProcessor

    try:
        return CLIPImageProcessor.from_pretrained(source)
    except OSError:
        log.warning(
            "no image processor config in %s; using CLIPImageProcessor's defaults at %d pixels",
            source,
            image_size,
        )
        return _default_hf_processor(image_size)


def _default_hf_processor(image_size: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def _normalised_encoder(tower: Any, embed: Callable[[Any, Any], Any]) -> Any:
    """Wrap ``tower`` in a module that returns ``embed(tower, pixels)`` scaled to unit length."""
    import torch

    class NormalisedImageEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(embed(self.tower, pixel_values), dim=-1)

    return NormalisedImageEncoder().eval()


def _embedding_dim(encoder: Any, image_size: int) -> int:
    import torch

    with torch.inference_mode():
        output = encoder(torch.zeros(1, 3, image_size, image_size))
    return int(output.shape[-1])


def _square_size(size: Any, identifier: str) -> int:
    if isinstance(size, (list, tuple)):
        height, width = (int(value) for value in size)
    else:
        height = width = int(size)
    if height != width:
        raise ModelError(
            f"{identifier} takes {width}x{height} images; edgeface's box crop is square, so only "
            f"square inputs are supported"
        )
    return height


def _manifest_interpolation(interpolation: str) -> str:
    if interpolation in ("bilinear", "bicubic"):
        return interpolation
    log.warning("interpolation %r has no edgeface equivalent; the manifest uses bicubic", interpolation)
    return "bicubic"


def _default_name(model: str, weights: str) -> str:
    model = model.split(":", 1)[-1].rstrip("/")
    model = Path(model).stem if model.endswith(".json") else model.split("/")[-1]
    if not model.lower().startswith("clip"):
        model = f"clip-{model}"
    return _slug(f"{model}-{Path(weights).stem}" if weights else model)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    if not slug:
        raise ConfigError(f"name {text!r} has no letters or digits")
    return slug


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read JSON file {path}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


# ---------------------------------------------------------------------------
# Export, quantization, parity and latency (the generic steps are in onnx_tools)


def export_model(source: SourceModel, args: argparse.Namespace) -> ExportResult:
    """Write the fp32 and int8 ONNX files and their manifests into ``args.out``.

    Files are built in a temporary folder inside ``args.out`` and moved into
    place only after the fp32 parity check passes, so a failed export leaves
    earlier files untouched. Raises :class:`ModelError` when the fp32 model's
    minimum cosine to torch is below ``FP32_MIN_COSINE``.
    """
    import torch

    threads = args.threads or os.cpu_count() or 1
    faces = load_images(args.faces or args.calibration, args.max_images)
    face_pixels = source.preprocess(faces)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as staging_name:
            staging = Path(staging_name)
            staged = {"fp32": staging / f"{source.name}.onnx"}
            log.info(
                "exporting %s (%dx%d, %d-d) to ONNX",
                source.name,
                source.image_size,
                source.image_size,
                source.embed_dim,
            )
            onnx_tools.export_onnx(
                source.encoder,
                source.image_size,
                staged["fp32"],
                input_name=INPUT_NAME,
                output_name=OUTPUT_NAME,
                opset=OPSET,
            )

            if args.quantization != "none":
                staged["int8"] = staging / f"{source.name}.int8.onnx"
                calibration = None
                if args.quantization == "static":
                    calibration = source.preprocess(load_images(args.calibration, args.max_images))
                log.info("quantizing to int8 (%s)", args.quantization)
                onnx_tools.quantize_int8(
                    staged["fp32"],
                    staged["int8"],
                    args.quantization,
                    calibration,
                    staging,
                    input_name=INPUT_NAME,
                )

            parity = onnx_tools.measure_parity(
                source.encoder, staged, face_pixels, threads, input_name=INPUT_NAME, output_name=OUTPUT_NAME
            )
            parity["images"] = len(face_pixels)
            _check_parity(parity)
            latency = measure_latency(source.encoder, staged, face_pixels[:1], threads)

            final = {}
            for precision, path in staged.items():
                final[precision] = out / path.name
                os.replace(path, final[precision])
    finally:
        torch.set_num_threads(previous_threads)

    result = ExportResult(
        fp32_path=final["fp32"],
        int8_path=final.get("int8"),
        parity=parity,
        latency=latency,
        sizes={precision: path.stat().st_size for precision, path in final.items()},
    )
    for precision, path in final.items():
        _write_clip_manifest(source, args, result, precision, path)
    return result


def _check_parity(parity: dict[str, Any]) -> None:
    fp32 = parity["fp32"]
    if fp32["min"] < FP32_MIN_COSINE:
        raise ModelError(
            f"the fp32 ONNX model does not match torch: minimum cosine {fp32['min']:.6f} over "
            f"{fp32['count']} images, required {FP32_MIN_COSINE}. Nothing was written."
        )
    int8 = parity.get("int8")
    if int8 is not None and int8["min"] < INT8_WARN_COSINE:
        log.warning(
            "int8 model is far from torch: cosine mean %.4f, minimum %.4f over %d images (warning below %s)",
            int8["mean"],
            int8["min"],
            int8["count"],
            INT8_WARN_COSINE,
        )


def measure_latency(
    encoder: Any, paths: dict[str, Path], pixels: np.ndarray, threads: int, repeats: int = 20
) -> dict[str, Any]:
    """Return the median milliseconds per call of torch and each CLIP ONNX file on ``pixels``.

    Calls :func:`onnx_tools.measure_latency` with this exporter's input and
    output names.
    """
    return onnx_tools.measure_latency(
        encoder, paths, pixels, threads, repeats, input_name=INPUT_NAME, output_name=OUTPUT_NAME
    )


# ---------------------------------------------------------------------------
# Manifests and report


def _write_clip_manifest(
    source: SourceModel, args: argparse.Namespace, result: ExportResult, precision: str, path: Path
) -> None:
    input_spec = InputSpec(
        name=INPUT_NAME,
        width=source.image_size,
        height=source.image_size,
        layout="NCHW",
        color="RGB",
        mean=[value * 255.0 for value in source.mean],
        std=[value * 255.0 for value in source.std],
    )
    crop = dataclasses.replace(
        preset("clip224")[1], box_scale=float(args.box_scale), interpolation=source.interpolation
    )
    quantization = None
    if precision == "int8":
        quantization = {
            "method": args.quantization,
            "weights": "int8 per channel",
            "op_types": ["MatMul"] if args.quantization == "dynamic" else ["MatMul", "Gemm"],
            "activation_matmuls": "fp32",
        }
    description = {
        **source.description,
        "exporter": "python -m export clip",
        "precision": precision,
        "quantization": quantization,
        "torch_export": {"exporter": "dynamo", "opset": OPSET},
        # CLIP's own preprocessing, which the parity check used; edgeface instead
        # crops a square around the face box (see crop) and resizes it.
        "clip_preprocess": source.resize,
        "parity": result.parity,
        "latency_ms": result.latency,
    }
    suffix = "" if precision == "fp32" else ".int8"
    write_manifest(
        path,
        name=f"{source.name}{suffix}",
        input_spec=input_spec,
        crop=crop,
        output=OutputSpec(name=OUTPUT_NAME, dim=source.embed_dim),
        trained=source.trained,
        source=description,
    )


def format_report(source: SourceModel, result: ExportResult) -> str:
    """Return the export's summary: files, sizes, cosines to torch and latencies."""
    lines = [f"{source.name}: {'trained' if source.trained else 'RANDOM'} weights, {source.embed_dim}-d"]
    if not source.trained:
        lines.append("  random weights: the figures below test the export only, not recognition")
    paths = {"fp32": result.fp32_path, "int8": result.int8_path}
    images = result.parity["images"]
    for precision, path in paths.items():
        if path is None:
            continue
        stats = result.parity[precision]
        lines.append(
            f"  {precision}: {path} ({result.sizes[precision] / 1e6:.1f} MB), cosine to torch over "
            f"{images} images: mean {stats['mean']:.6f}, minimum {stats['min']:.6f}"
        )
    latency = result.latency
    timings = ", ".join(
        f"{key} {latency[key]:.1f} ms" for key in ("torch", "fp32", "int8") if key in latency
    )
    lines.append(f"  latency, median per batch of {latency['batch']} at {latency['threads']} threads: {timings}")
    return "\n".join(lines)
