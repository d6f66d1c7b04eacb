"""End to end on real faces: enrol folders of photos, identify test photos via the CLI."""

import json
import shutil

import pytest

from conftest import KNN, ORL, require
from edgeface.cli import main

# Who is in each knn-examples test photo, left to right in the photo.
EXPECTED = {
    "alex_lacamoire1.jpg": ["alex_lacamoire"],
    "johnsnow_test1.jpg": ["kit_harington"],
    "kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "obama1.jpg": ["obama"],
    "obama_and_biden.jpg": ["biden", "obama"],
}

# MobileFaceNet's same-person distances on these photos are 0.6-0.85 and
# different-person distances above 1.25 (measured); 1.05 sits between.
MOBILEFACENET_THRESHOLD = "1.05"


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def identify_json(capsys, gallery, images, *options):
    code, out, err = run_cli(capsys, "identify", *images, "--gallery", gallery, "--json", *options)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def named_left_to_right(records, image_name):
    faces = [r for r in records if r["image"].endswith(image_name) and r["person"] is not None]
    return [r["person"] for r in sorted(faces, key=lambda r: r["box"][0])]


@pytest.fixture(scope="module")
def yunet_options(yunet_model, mobilefacenet):
    return ["--detector", "yunet", "--yunet-model", yunet_model, "--model", mobilefacenet]


def test_knn_examples_with_yunet(tmp_path, capsys, yunet_options):
    train = require(KNN / "train")
    code, out, err = run_cli(capsys, "enroll", train, "--gallery", tmp_path, *yunet_options)
    assert code == 0, err
    assert "5 people enrolled" in out

    images = sorted((KNN / "test").iterdir())
    records = identify_json(capsys, tmp_path, images, *yunet_options, "--threshold", MOBILEFACENET_THRESHOLD)
    for name, people in EXPECTED.items():
        assert named_left_to_right(records, name) == people, name

    first = records[0]
    assert set(first) == {"image", "box", "person", "votes", "distance", "runner_up", "runner_up_distance"}
    assert 0.0 <= first["distance"] <= 2.0


def test_knn_examples_with_dlib_detector(tmp_path, capsys, mobilefacenet):
    pytest.importorskip("dlib", reason="the dlib detector needs dlib (pip install 'edgeface[dlib]')")
    options = ["--detector", "dlib", "--model", mobilefacenet]
    code, out, err = run_cli(capsys, "enroll", require(KNN / "train"), "--gallery", tmp_path, *options)
    assert code == 0, err

    images = sorted((KNN / "test").iterdir())
    records = identify_json(capsys, tmp_path, images, *options, "--threshold", MOBILEFACENET_THRESHOLD)
    for name, people in EXPECTED.items():
        assert named_left_to_right(records, name) == people, name


def test_knn_examples_with_default_config(tmp_path, capsys, dlib_resnet):
    # The README's main job: dlib's detector, the exported dlib ResNet and
    # every matching setting at its default.
    pytest.importorskip("dlib", reason="the dlib detector needs dlib (pip install 'edgeface[dlib]')")
    options = ["--model", dlib_resnet]
    code, out, err = run_cli(capsys, "enroll", require(KNN / "train"), "--gallery", tmp_path, *options)
    assert code == 0, err

    images = sorted((KNN / "test").iterdir())
    records = identify_json(capsys, tmp_path, images, *options)
    for name, people in EXPECTED.items():
        assert named_left_to_right(records, name) == people, name
    # The third face in obama_and_biden.jpg is a child who is not enrolled.
    unknown = [r for r in records if r["person"] is None]
    assert [r["image"].endswith("obama_and_biden.jpg") for r in unknown] == [True]


def test_timings_reported_per_stage(tmp_path, capsys, yunet_options):
    run_cli(capsys, "enroll", require(KNN / "train"), "--gallery", tmp_path, *yunet_options)
    records = identify_json(capsys, tmp_path, [KNN / "test" / "obama1.jpg"], *yunet_options, "--timings")
    assert set(records[0]["timings"]) == {"detect_ms", "embed_ms", "search_ms"}
    assert records[0]["timings"]["detect_ms"] > 0


def test_stranger_is_unknown(tmp_path, capsys, yunet_options):
    people = tmp_path / "people"
    shutil.copytree(require(KNN / "train" / "obama"), people / "obama")
    run_cli(capsys, "enroll", people, "--gallery", tmp_path / "g", *yunet_options)
    records = identify_json(
        capsys, tmp_path / "g", [KNN / "test" / "alex_lacamoire1.jpg"], *yunet_options, "--threshold", MOBILEFACENET_THRESHOLD
    )
    assert [r["person"] for r in records] == [None]
    assert records[0]["runner_up"] == "obama"


def test_orl_accuracy(tmp_path, capsys, yunet_options):
    # ORL: enrol images 1-5 of each of the 40 people, identify images 6-10.
    orl = require(ORL)
    people = tmp_path / "people"
    queries = []
    for folder in sorted(p for p in orl.iterdir() if p.is_dir()):
        (people / folder.name).mkdir(parents=True)
        for i in range(1, 6):
            shutil.copy(folder / f"{i}.pgm", people / folder.name / f"{i}.pgm")
        queries += [folder / f"{i}.pgm" for i in range(6, 11)]

    options = [*yunet_options, "--config", tmp_path / "small-faces.yaml"]
    (tmp_path / "small-faces.yaml").write_text("detector:\n  min_face_size: 20\n")
    code, out, err = run_cli(capsys, "enroll", people, "--gallery", tmp_path / "g", *options)
    assert code == 0, err

    records = identify_json(capsys, tmp_path / "g", queries, *options, "--threshold", MOBILEFACENET_THRESHOLD)
    answered = {r["image"]: r["person"] for r in records}
    correct = sum(answered.get(str(q)) == q.parent.name for q in queries)
    accuracy = correct / len(queries)
    print(f"ORL accuracy {correct}/{len(queries)} = {accuracy:.3f}")
    assert accuracy >= 0.97


def test_unreadable_image_reported_and_others_identified(tmp_path, capsys, yunet_options):
    run_cli(capsys, "enroll", require(KNN / "train"), "--gallery", tmp_path, *yunet_options)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    code, out, err = run_cli(
        capsys, "identify", bad, KNN / "test" / "obama1.jpg", "--gallery", tmp_path, *yunet_options, "--json",
        "--threshold", MOBILEFACENET_THRESHOLD,
    )
    assert code == 1
    assert "notes.jpg" in err
    assert json.loads(out.splitlines()[0])["person"] == "obama"


def test_gallery_of_other_model_rejected(tmp_path, capsys, yunet_options, mobilefacenet):
    run_cli(capsys, "enroll", require(KNN / "train"), "--gallery", tmp_path / "g", *yunet_options)

    # The same network registered with other preprocessing is another model.
    other = tmp_path / "other" / "MobileFaceNet.onnx"
    other.parent.mkdir()
    shutil.copy(mobilefacenet, other)
    code, out, err = run_cli(capsys, "model", "register", other, "--preset", "arcface112", "--std", "127.5,127.5,127.5")
    assert code == 0, err

    options = ["--detector", "yunet", "--yunet-model", yunet_options[3], "--model", other]
    code, out, err = run_cli(capsys, "identify", KNN / "test" / "obama1.jpg", "--gallery", tmp_path / "g", *options)
    assert code == 2
    assert "built with model" in err
    assert "enrol again" in err


def test_non_utf8_file_name_printed_escaped(tmp_path, capsys, yunet_options):
    import os
    import subprocess
    import sys

    run_cli(capsys, "enroll", require(KNN / "train"), "--gallery", tmp_path / "g", *yunet_options)
    odd = os.fsdecode(bytes(tmp_path) + b"/ob\xffama.jpg")
    shutil.copy(KNN / "test" / "obama1.jpg", odd)

    command = [sys.executable, "-m", "edgeface", "identify", odd, "--gallery", str(tmp_path / "g"), "--json"]
    command += [str(option) for option in yunet_options] + ["--threshold", MOBILEFACENET_THRESHOLD]
    result = subprocess.run(command, capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    record = json.loads(result.stdout.decode("utf-8"))
    assert record["person"] == "obama"
    assert record["image"] == odd
