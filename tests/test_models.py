"""Manifests, model registration, alignment and the embedder, with real ONNX models."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import KNN, MOBILEFACENET, require
from edgeface.alignment import crop_face, similarity_transform
from edgeface.cli import main
from edgeface.detection import YuNetDetector
from edgeface.embedding import Embedder
from edgeface.errors import ModelError
from edgeface.imageio import load_image
from edgeface.manifest import ARCFACE_112, load_manifest, manifest_path_for, preset

ROOT = Path(__file__).resolve().parents[1]


def test_similarity_transform_recovers_known_motion():
    angle = np.deg2rad(20)
    rotation = 1.7 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.array(ARCFACE_112)
    target = source @ rotation.T + [5.0, -3.0]
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], [5.0, -3.0], atol=1e-9)


def test_box_crop_centres_the_face():
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    image[90:110, 140:160] = 255
    _, crop = preset("clip224")
    out = crop_face(image, None, (130.0, 80.0, 40.0, 40.0), crop, 60, 60)
    # box_scale 1.5: a 60 px square around the box, the bright 20 px patch in the middle.
    assert out.shape == (60, 60, 3)
    assert out[30, 30, 0] == 255
    assert out[5, 5, 0] == 0


def test_register_writes_manifest_after_dry_run(tmp_path, capsys):
    model = tmp_path / "MobileFaceNet.onnx"
    shutil.copy(require(MOBILEFACENET), model)
    assert main(["model", "register", str(model), "--preset", "arcface112", "--name", "mfn"]) == 0
    assert "dim 128" in capsys.readouterr().out

    manifest = load_manifest(model)
    assert manifest.name == "mfn"
    assert manifest.input.name == "input0"
    assert manifest.input.layout == "NCHW"
    assert manifest.output.dim == 128
    assert manifest.crop.points == [list(p) for p in ARCFACE_112]


def test_register_rejects_wrong_preset_size(tmp_path, capsys):
    model = tmp_path / "MobileFaceNet.onnx"
    shutil.copy(require(MOBILEFACENET), model)
    assert main(["model", "register", str(model), "--preset", "dlib150"]) == 2
    assert "does not fit preset dlib150" in capsys.readouterr().err
    assert not manifest_path_for(model).exists()


def test_register_rejects_non_model(tmp_path, capsys):
    model = tmp_path / "fake.onnx"
    model.write_bytes(b"\x00" * 100)
    assert main(["model", "register", str(model), "--preset", "arcface112"]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_changed_model_file_rejected(tmp_path, mobilefacenet):
    model = tmp_path / "m.onnx"
    shutil.copy(mobilefacenet, model)
    data = json.loads(manifest_path_for(mobilefacenet).read_text())
    data["model_file"] = "m.onnx"
    manifest_path_for(model).write_text(json.dumps(data))
    load_manifest(model)

    with open(model, "ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(ModelError, match="model changed after the manifest"):
        load_manifest(model)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("output"), "missing field 'output'"),
        (lambda d: d["input"].update(color="YUV"), "input.color"),
        (lambda d: d["input"].update(std=[0, 1, 1]), "input.std"),
        (lambda d: d["crop"].update(points=[[1, 2]]), "crop.points"),
        (lambda d: d.update(format=7), "unsupported manifest format"),
    ],
)
def test_invalid_manifest_names_the_field(mobilefacenet, change, message):
    data = json.loads(manifest_path_for(mobilefacenet).read_text())
    change(data)
    from edgeface.manifest import manifest_from_dict

    with pytest.raises(ModelError, match=message):
        manifest_from_dict(data)


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(ModelError, match="model register"):
        load_manifest(tmp_path / "nothing.onnx")


def test_untrained_model_rejected_unless_allowed(tmp_path, mobilefacenet):
    data = json.loads(manifest_path_for(mobilefacenet).read_text())
    data["trained"] = False
    copy = tmp_path / "MobileFaceNet.onnx"
    shutil.copy(mobilefacenet, copy)
    manifest_path_for(copy).write_text(json.dumps(data))

    from edgeface.errors import UntrainedModelError

    with pytest.raises(UntrainedModelError, match="--allow-untrained"):
        Embedder(copy)
    assert Embedder(copy, allow_untrained=True).dim == 128


def test_embeddings_are_unit_length_and_batch_independent(mobilefacenet, yunet_model):
    embedder = Embedder(mobilefacenet)
    detector = YuNetDetector(yunet_model)
    crops = []
    for path in ["obama/obama.jpg", "obama/obama2.jpg", "biden/biden.jpg"]:
        image = load_image(require(KNN / "train" / path))
        face = detector.detect(image)[0]
        crops.append(embedder.crop(image, face.landmarks, face.box))

    batch = embedder.embed_crops(crops)
    single = np.concatenate([embedder.embed_crops([c]) for c in crops])
    assert batch.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, single, atol=1e-5)

    same = np.linalg.norm(batch[0] - batch[1])
    different = np.linalg.norm(batch[0] - batch[2])
    assert same < different


def test_yunet_landmarks_in_documented_order(yunet_model):
    image = load_image(require(KNN / "train" / "obama" / "obama.jpg"))
    face = YuNetDetector(yunet_model).detect(image)[0]
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    x, y, w, h = face.box
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in face.landmarks)


def test_dlib_landmarks_in_documented_order():
    pytest.importorskip("dlib", reason="the dlib detector needs dlib (pip install 'edgeface[dlib]')")
    from edgeface.detection import DlibDetector

    image = load_image(require(KNN / "train" / "obama" / "obama.jpg"))
    face = DlibDetector().detect(image)[0]
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_yunet_and_dlib_landmarks_agree():
    # Both backends must point at the same facial features: dlib's mouth
    # corners are estimated from its mean face, so allow a few pixels more.
    pytest.importorskip("dlib", reason="the dlib detector needs dlib (pip install 'edgeface[dlib]')")
    from conftest import YUNET
    from edgeface.detection import DlibDetector

    image = load_image(require(KNN / "train" / "obama" / "obama.jpg"))
    yunet = YuNetDetector(require(YUNET)).detect(image)[0]
    dlib_face = DlibDetector().detect(image)[0]
    eye_distance = np.linalg.norm(yunet.landmarks[1] - yunet.landmarks[0])
    error = np.linalg.norm(yunet.landmarks - dlib_face.landmarks, axis=1) / eye_distance
    assert error.max() < 0.25, error


@pytest.mark.parametrize("option", ["--std=inf,inf,inf", "--mean=nan,nan,nan", "--std=1e30,1e30,1e30"])
def test_register_rejects_normalisation_erasing_input(tmp_path, capsys, option):
    model = tmp_path / "MobileFaceNet.onnx"
    shutil.copy(require(MOBILEFACENET), model)
    assert main(["model", "register", str(model), "--preset", "arcface112", option]) == 2
    assert "std" in capsys.readouterr().err
    assert not manifest_path_for(model).exists()


def test_register_rejects_json_path(tmp_path, capsys):
    model = tmp_path / "model.json"
    shutil.copy(require(MOBILEFACENET), model)
    before = model.read_bytes()
    assert main(["model", "register", str(model), "--preset", "arcface112"]) == 2
    assert "not an .onnx file" in capsys.readouterr().err
    assert model.read_bytes() == before


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["input"].pop("mean"), "missing field 'input.mean'"),
        (lambda d: d.pop("trained"), "missing field 'trained'"),
        (lambda d: d["input"].update(mean=5), "input.mean"),
        (lambda d: d["crop"].update(box_scale="big"), "crop.box_scale"),
        (lambda d: d["crop"].update(points=[["a", 1]] * 5), "crop.points"),
        (lambda d: d.update(model_file=None), "model_file"),
    ],
)
def test_manifest_type_errors_name_the_field(mobilefacenet, change, message):
    from edgeface.manifest import manifest_from_dict

    data = json.loads(manifest_path_for(mobilefacenet).read_text())
    change(data)
    with pytest.raises(ModelError, match=message):
        manifest_from_dict(data)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["output"].update(dim=64), "returns 128 values"),
        (lambda d: d["output"].update(name="logits"), "names output 'logits'"),
        (lambda d: d["input"].update(width=96, height=96), "does not take the input"),
        (lambda d: d["input"].update(layout="NHWC"), "does not take the input"),
    ],
)
def test_manifest_not_matching_model_rejected(tmp_path, mobilefacenet, change, message):
    data = json.loads(manifest_path_for(mobilefacenet).read_text())
    change(data)
    copy = tmp_path / "MobileFaceNet.onnx"
    shutil.copy(mobilefacenet, copy)
    manifest_path_for(copy).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message):
        Embedder(copy)


@pytest.mark.parametrize("backend", ["yunet", "dlib"])
def test_large_frame_scaled_for_detection(backend, yunet_model):
    if backend == "dlib":
        pytest.importorskip("dlib", reason="the dlib detector needs dlib (pip install 'edgeface[dlib]')")
    import cv2

    from edgeface.detection import make_detector
    from edgeface.config import load_config

    settings = load_config(None, {"detector.backend": backend, "detector.yunet_model": str(yunet_model)})["detector"]
    detector = make_detector(settings)
    image = load_image(require(KNN / "train" / "obama" / "obama.jpg"))
    large = cv2.resize(image, None, fx=3.0, fy=3.0, interpolation=cv2.INTER_CUBIC)
    assert max(large.shape) > settings["max_side"]

    small_face = detector.detect(image)[0]
    large_face = detector.detect(large)[0]
    # Box sizes move with the detector's pyramid levels; centres and landmarks must not.
    def centre(face):
        x, y, w, h = face.box
        return np.array([x + w / 2, y + h / 2])

    np.testing.assert_allclose(centre(large_face), 3.0 * centre(small_face), atol=0.1 * large_face.box[2])
    np.testing.assert_allclose(large_face.landmarks, 3.0 * small_face.landmarks, atol=0.05 * large_face.box[2])


def test_wrong_yunet_model_raises_detector_error(mobilefacenet):
    from edgeface.errors import DetectorError

    detector = YuNetDetector(mobilefacenet)
    with pytest.raises(DetectorError, match="YuNet face detector"):
        detector.detect(load_image(require(KNN / "train" / "obama" / "obama.jpg")))
