"""Model manifests: the JSON file beside each ``.onnx`` embedder.

A manifest states everything the pipeline needs to feed a face to a model
without model-specific code. It names the input tensor (name, size, layout,
colour order, normalisation) and how the face is cut out of the frame (a
5-point similarity alignment to a template, or a padded box crop). It also
names the output tensor and its dimension, and records the sha256 of the
model file. The format is described in ``docs/manifest.md``.

The manifest of ``model.onnx`` is ``model.json`` in the same folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError

FORMAT_VERSION = 1

# Five landmarks in edgeface's order: the eye on the image's left (the
# subject's right eye), the eye on the image's right, the nose tip, the mouth
# corner on the image's left, the mouth corner on the image's right.

# ArcFace / InsightFace 112x112 template, in pixels of the 112x112 crop.
ARCFACE_112 = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
]

# dlib's mean face (from dlib's get_face_chip_details, interpolation.h), in
# units of the face box before padding. The eye centres are the means of
# dlib's six points around each eye (36-41 and 42-47). The nose tip is point
# 30, and the mouth corners are points 48 and 54.
DLIB_MEAN_FACE_5 = [
    [0.2254918, 0.2159903],
    [0.7547613, 0.2159903],
    [0.4901270, 0.5156250],
    [0.2541490, 0.7802330],
    [0.7261040, 0.7802330],
]

# dlib's own 5-point template for its 5-landmark shape predictor (two corners
# of the image-right eye, two of the image-left eye, the base of the nose), in
# the same units. Used to map dlib's landmarks onto edgeface's five points.
DLIB_5_POINT_TEMPLATE = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
]


def dlib_chip_points(size: int = 150, padding: float = 0.25) -> list[list[float]]:
    """Return the five template points of dlib's face chip, in chip pixels.

    dlib places a mean-face point ``p`` at ``(padding + p) / (1 + 2 * padding) * size``
    in units where the chip spans ``0..size``. Pixel ``i``'s centre is at
    ``i + 0.5`` in those units, so the point is 0.5 lower in the pixel-centre
    coordinates that OpenCV and the landmarks use. ``compute_face_descriptor``
    uses ``size=150`` and ``padding=0.25``.

    NOTE: dlib's ``get_face_chip`` also scales the chip by ``(size * s - 1) / ((size - 1) * s)``,
    where ``s`` is frame pixels per chip pixel, because ``centered_drect``
    (dlib/geometry/drectangle.h) shortens the crop by one frame pixel. These
    points assume ``s = 1``. For ``s`` from 0.6 to any larger value, dlib's
    chip differs from them by at most 0.5 pixel at the chip's border.
    """
    scale = size / (1.0 + 2.0 * padding)
    return [[(padding + x) * scale - 0.5, (padding + y) * scale - 0.5] for x, y in DLIB_MEAN_FACE_5]


CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class InputSpec:
    """The model's input tensor and how pixel values are normalised.

    A pixel ``p`` in 0..255 is fed as ``(p - mean[c]) / std[c]``, with ``mean``
    and ``std`` in 0..255 pixel units and listed in ``color`` order.
    """

    name: str
    width: int
    height: int
    layout: str = "NCHW"
    color: str = "RGB"
    mean: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    std: list[float] = field(default_factory=lambda: [128.0, 128.0, 128.0])


@dataclass
class CropSpec:
    """How a face is cut out of the frame before it reaches the model.

    With ``method`` ``"align"``, a similarity transform maps the five
    landmarks onto ``points``, which are in pixels of the model input. With
    ``"box"``, a square around the detector's box, its side ``box_scale``
    times the box's longer side, is resized to the input size.
    """

    method: str
    template: str = ""
    points: list[list[float]] | None = None
    box_scale: float = 1.0
    interpolation: str = "bilinear"


@dataclass
class OutputSpec:
    """The model's embedding output."""

    name: str
    dim: int


@dataclass
class Manifest:
    """Everything the pipeline needs to run one ONNX embedder."""

    name: str
    model_file: str
    sha256: str
    input: InputSpec
    crop: CropSpec
    output: OutputSpec
    trained: bool = True
    format: int = FORMAT_VERSION
    source: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def model_path(self) -> Path:
        """Absolute path of the ``.onnx`` file this manifest describes."""
        base = self.path.parent if self.path is not None else Path.cwd()
        return (base / self.model_file).resolve()

    def fingerprint(self) -> str:
        """Return a hash of the model file and its preprocessing.

        Two manifests with the same fingerprint produce comparable vectors;
        a gallery stores it and rejects queries from any other model.
        """
        key = {
            "sha256": self.sha256,
            "input": asdict(self.input),
            "crop": asdict(self.crop),
            "output": asdict(self.output),
        }
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data


def manifest_path_for(model_path: str | os.PathLike[str]) -> Path:
    """Return the manifest path for a model path: ``x.onnx`` -> ``x.json``."""
    return Path(model_path).with_suffix(".json")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> Path:
    """Write a manifest as JSON atomically and return its path."""
    path = Path(path)
    validate(manifest, where=str(path))
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    manifest.path = path.resolve()
    return path


def load_manifest(path: str | os.PathLike[str], verify_hash: bool = True) -> Manifest:
    """Read a manifest (or the manifest beside an ``.onnx`` path) and check it.

    Raises :class:`ModelError` naming the file and the field when the JSON is
    invalid, a field is missing or out of range, the model file is missing,
    or (with ``verify_hash``) the model file's sha256 differs from the
    manifest's.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        path = manifest_path_for(path)
    if not path.is_file():
        raise ModelError(
            f"model manifest not found: {path}. Export a model with 'python -m export dlib-resnet --out models' "
            f"or write a manifest with 'edgeface model register MODEL.onnx --preset ...'. Without --config, "
            f"the model path models/... is relative to the working folder: run from the folder holding models/, "
            f"or set embedder.model in a config file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"model manifest {path} is not valid JSON: {error}") from error

    manifest = manifest_from_dict(data, where=str(path))
    manifest.path = path.resolve()

    model_path = manifest.model_path
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} named by manifest {path} not found")
    if verify_hash:
        actual = sha256_file(model_path)
        if actual != manifest.sha256:
            raise ModelError(
                f"model file {model_path} has sha256 {actual[:12]}..., but manifest {path} "
                f"expects {manifest.sha256[:12]}...: the model changed after the manifest was "
                f"written. Export it again or re-register it."
            )
    return manifest


def manifest_from_dict(data: Any, where: str = "manifest") -> Manifest:
    """Build a :class:`Manifest` from parsed JSON, raising :class:`ModelError` on bad fields."""
    if not isinstance(data, dict):
        raise ModelError(f"{where}: expected a JSON object")
    if data.get("format") != FORMAT_VERSION:
        raise ModelError(
            f"{where}: unsupported manifest format {data.get('format')!r}, expected {FORMAT_VERSION}"
        )
    # Every field that changes the model's input is required, because a
    # default could silently feed the model the wrong pixels.
    for section, keys in _REQUIRED.items():
        values = data.get(section) if section else data
        if section and not isinstance(values, dict):
            raise ModelError(f"{where}: missing field '{section}' (a JSON object)")
        for key in keys:
            if key not in values:
                raise ModelError(f"{where}: missing field '{section + '.' if section else ''}{key}'")
    try:
        manifest = Manifest(
            name=data["name"],
            model_file=data["model_file"],
            sha256=data["sha256"],
            input=InputSpec(**data["input"]),
            crop=CropSpec(**data["crop"]),
            output=OutputSpec(**data["output"]),
            trained=data["trained"],
            format=data["format"],
            source=data.get("source", {}),
        )
    except KeyError as error:
        raise ModelError(f"{where}: missing field {error}") from error
    except TypeError as error:
        raise ModelError(f"{where}: invalid field: {error}") from error
    validate(manifest, where)
    return manifest


_REQUIRED = {
    "": ("name", "model_file", "sha256", "trained", "input", "crop", "output"),
    "input": ("name", "width", "height", "layout", "color", "mean", "std"),
    "crop": ("method",),
    "output": ("name", "dim"),
}


def _finite_numbers(values: Any, count: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )


def validate(manifest: Manifest, where: str = "manifest") -> None:
    """Check field types and ranges, raising :class:`ModelError` naming the field."""
    spec = manifest.input
    crop = manifest.crop

    def fail(message: str) -> None:
        raise ModelError(f"{where}: {message}")

    if not isinstance(manifest.name, str) or not manifest.name:
        fail("name must be a non-empty string")
    if not isinstance(manifest.model_file, str) or not manifest.model_file.endswith(".onnx"):
        fail("model_file must be the name of an .onnx file")
    if not isinstance(manifest.sha256, str) or len(manifest.sha256) != 64:
        fail("sha256 must be 64 hex digits")
    if not isinstance(spec.name, str) or not isinstance(manifest.output.name, str):
        fail("input.name and output.name must be strings")
    if not (isinstance(spec.width, int) and isinstance(spec.height, int)):
        fail("input.width and input.height must be integers")
    if not (16 <= spec.width <= 1024 and 16 <= spec.height <= 1024):
        fail(f"input size {spec.width}x{spec.height} out of range 16..1024")
    if spec.layout not in ("NCHW", "NHWC"):
        fail(f"input.layout must be NCHW or NHWC, not {spec.layout!r}")
    if spec.color not in ("RGB", "BGR"):
        fail(f"input.color must be RGB or BGR, not {spec.color!r}")
    if not _finite_numbers(spec.mean, 3) or not _finite_numbers(spec.std, 3):
        fail("input.mean and input.std must each be a list of three finite numbers")
    if any(s <= 0 for s in spec.std):
        fail("input.std values must be positive")
    if crop.method not in ("align", "box"):
        fail(f"crop.method must be 'align' or 'box', not {crop.method!r}")
    if crop.method == "align":
        points = crop.points
        if not isinstance(points, list) or len(points) != 5 or not all(_finite_numbers(p, 2) for p in points):
            fail("crop.points must be five [x, y] pairs of finite numbers for crop.method 'align'")
    if not _finite_numbers([crop.box_scale], 1) or not (0.5 <= crop.box_scale <= 4.0):
        fail(f"crop.box_scale {crop.box_scale!r} must be a number in 0.5..4.0")
    if crop.interpolation not in ("bilinear", "bicubic", "area"):
        fail(f"crop.interpolation must be bilinear, bicubic or area, not {crop.interpolation!r}")
    if not isinstance(manifest.output.dim, int) or isinstance(manifest.output.dim, bool) or manifest.output.dim < 1:
        fail("output.dim must be a positive integer")
    if not isinstance(manifest.trained, bool):
        fail("trained must be true or false")


def preset(name: str) -> tuple[InputSpec, CropSpec]:
    """Return the input and crop specification of a known model family.

    ``arcface112``: 112x112 RGB aligned to the ArcFace template, ``(p - 127.5) / 128``.
    ``dlib150``: dlib's 150x150 face chip with padding 0.25, RGB, dlib's
    channel means and a scale of 1/256.
    ``clip224``: a square crop 1.5 times the face box, resized bicubically to
    224x224, RGB, normalised with CLIP's mean and std.
    """
    if name == "arcface112":
        return (
            InputSpec(name="", width=112, height=112, mean=[127.5] * 3, std=[128.0] * 3),
            CropSpec(method="align", template="arcface112", points=[list(p) for p in ARCFACE_112]),
        )
    if name == "dlib150":
        return (
            InputSpec(
                name="",
                width=150,
                height=150,
                mean=[122.782, 117.001, 104.298],
                std=[256.0, 256.0, 256.0],
            ),
            CropSpec(method="align", template="dlib150", points=dlib_chip_points(150, 0.25)),
        )
    if name == "clip224":
        return (
            InputSpec(
                name="",
                width=224,
                height=224,
                mean=[m * 255.0 for m in CLIP_MEAN],
                std=[s * 255.0 for s in CLIP_STD],
            ),
            CropSpec(method="box", template="box", box_scale=1.5, interpolation="bicubic"),
        )
    raise ModelError(f"unknown preset {name!r}: choose arcface112, dlib150 or clip224")


PRESETS = ("arcface112", "dlib150", "clip224")
