"""``edgeface eval`` end to end on a few LFW people, with real models."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import LFW, require
from edgeface.cli import main
from edgeface.evaluation.datasets import impostor_images, load_split
from edgeface.evaluation.plots import available as plots_available

ENROLLED = ("Adrien_Brody", "Ann_Veneman", "Anna_Kournikova")
STRANGERS = ("Aaron_Eckhart", "Aaron_Guiel", "Abba_Eban", "Adam_Ant", "Adam_Freier", "Adam_Mair")


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """A flat folder of three people with 11 images each and six strangers with fewer than 10."""
    images = require(LFW) / "images"
    root = tmp_path_factory.mktemp("people")
    for person in ENROLLED + STRANGERS:
        (root / person).mkdir()
        for image in sorted((images / person).glob("*.jpg"))[:11]:
            (root / person / image.name).symlink_to(image)
    return root


@pytest.fixture(scope="module")
def model_args(dlib_resnet, yunet_model):
    return ["--model", str(dlib_resnet), "--detector", "yunet", "--yunet-model", str(yunet_model)]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_lfw10_rule(people):
    split = load_split(people)
    assert split.people == sorted(ENROLLED)
    assert len(split.enrol) == 15
    assert len(split.queries) == 18
    ann = [path.name for person, path in split.enrol if person == "Ann_Veneman"]
    assert ann == [f"Ann_Veneman_{n:04d}.jpg" for n in range(1, 6)]


def test_train_val_layout(tmp_path, people):
    for person in ENROLLED:
        images = sorted((people / person).iterdir())
        for folder, chosen in (("train", images[:2]), ("val", images[2:4])):
            (tmp_path / person / folder).mkdir(parents=True)
            for image in chosen:
                (tmp_path / person / folder / image.name).symlink_to(image.resolve())
    split = load_split(tmp_path)
    assert len(split.enrol) == 6
    assert len(split.queries) == 6
    assert split.description.startswith("train-val")


def test_impostors_are_deterministic(people):
    first = impostor_images(people, 4, set(ENROLLED), seed=0, below=10)
    assert first == impostor_images(people, 4, set(ENROLLED), seed=0, below=10)
    assert len(first) == 4
    assert {person for person, _ in first} <= set(STRANGERS)
    assert impostor_images(people, 0, set(ENROLLED), seed=0, below=10) == impostor_images(people, 0, set(ENROLLED), seed=7, below=10)


def test_grid_writes_every_output(tmp_path, people, model_args, capsys):
    out = tmp_path / "grid"
    assert main(["eval", "grid", str(people), "--out", str(out), *model_args]) == 0
    printed = capsys.readouterr().out
    assert "best row: k1=" in printed
    assert "Ann_Veneman" in printed

    rows = read_csv(out / "grid_search_results.csv")
    assert list(rows[0]) == ["k1", "k2", "threshold", "precision", "recall", "f1", "tp", "fp", "tn", "fn"]
    assert len(rows) == 45 * 51
    for row in rows:
        total = int(row["tp"]) + int(row["fp"]) + int(row["tn"]) + int(row["fn"])
        assert total == 18 * 4  # queries x (3 people + Unknown)
    best = read_csv(out / "best_row.csv")[0]
    assert float(best["f1"]) == max(float(row["f1"]) for row in rows)
    # dlib's ResNet separates these three people at thresholds from 0.5 up.
    assert float(best["recall"]) > 0.9

    report = read_csv(out / "class_report.csv")
    assert [row["class"] for row in report] == sorted(ENROLLED)
    assert sum(int(row["support"]) for row in report) == 18
    bands = read_csv(out / "performance_bands.csv")
    assert sum(int(row["f1"]) for row in bands) == 3
    record = json.loads((out / "run.json").read_text())
    assert record["model_fingerprint"]
    assert record["command"].startswith("edgeface eval grid")
    if plots_available():
        for name in ("confusion_matrix.png", "precision_recall.png", "roc.png"):
            assert (out / name).stat().st_size > 1000


def test_grid_is_reproducible_from_cache(tmp_path, people, model_args):
    cache = tmp_path / "cache"
    common = [str(people), "--cache", str(cache), "--no-plots", "--thresholds", "0.3:0.6:0.05", *model_args]
    assert main(["eval", "grid", *common, "--out", str(tmp_path / "a")]) == 0
    first_cache = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    assert main(["eval", "grid", *common, "--out", str(tmp_path / "b")]) == 0
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == first_cache  # nothing new to store
    for name in ("grid_search_results.csv", "class_report.csv", "confusion_matrix.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_openset_rates(tmp_path, people, model_args, capsys):
    out = tmp_path / "openset"
    assert main(["eval", "openset", str(people), "--out", str(out), "--threshold", "0.4", *model_args]) == 0
    printed = capsys.readouterr().out
    assert "far_0.001: not measurable, needs at least 1000 impostor queries" in printed

    rates = read_csv(out / "openset_rates.csv")
    far = np.array([float(row["far"]) for row in rates])
    frr = np.array([float(row["frr"]) for row in rates])
    assert np.all(np.diff(far) >= 0)  # accepting grows with the threshold
    assert far[0] == 0.0
    assert far[-1] == 1.0
    assert frr[0] == 1.0
    impostors = read_csv(out / "impostors.csv")
    assert len(impostors) == len(STRANGERS)
    points = {row["point"]: row for row in read_csv(out / "operating_points.csv")}
    assert float(points["configured"]["threshold"]) == pytest.approx(0.4)
    if plots_available():
        assert (out / "det.png").stat().st_size > 1000


def test_lfw_json(tmp_path, model_args, capsys):
    lfw = require(LFW)
    # Ten folds of one same-person and one different-person pair from View 2.
    lines = (lfw / "pairs.txt").read_text().splitlines()[1:]
    pairs = ["10 1"]
    for fold in range(10):
        pairs += [lines[600 * fold], lines[600 * fold + 300]]
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("\n".join(pairs) + "\n")

    assert main(["eval", "lfw", str(lfw), "--pairs", str(pairs_file), "--out", str(tmp_path / "lfw"), "--json", "--no-plots", *model_args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"accuracy_mean", "accuracy_std", "tar_at_far_1e-3", "threshold_mean", "pairs", "failed_detections"}
    assert summary["pairs"] == 20
    assert summary["failed_detections"] == 0
    assert summary["accuracy_mean"] >= 0.9
    folds = read_csv(tmp_path / "lfw" / "lfw_folds.csv")
    assert len(folds) == 10


def test_scale_rows(tmp_path, people, model_args, capsys):
    out = tmp_path / "scale"
    assert main(["eval", "scale", str(people), "--out", str(out), "--sizes", "1,2,10", *model_args]) == 0
    rows = read_csv(out / "scale.csv")
    assert [int(row["people"]) for row in rows] == [1, 2, 3]  # 10 is capped at the 3 people available
    assert [int(row["enrol_images"]) for row in rows] == [5, 10, 15]
    assert [int(row["queries"]) for row in rows] == [6, 12, 18]
    assert all(float(row["load_seconds"]) > 0 for row in rows)


def test_bad_thresholds_exit_2(tmp_path, people, capsys):
    assert main(["eval", "grid", str(people), "--out", str(tmp_path), "--thresholds", "0.5:3:0.01"]) == 2
    assert "invalid --thresholds" in capsys.readouterr().err


def test_missing_folder_exit_2(tmp_path, capsys):
    assert main(["eval", "grid", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    assert "data folder not found" in capsys.readouterr().err


def test_people_option_keeps_first_names(tmp_path, people, model_args):
    out = tmp_path / "grid"
    assert main(["eval", "grid", str(people), "--people", "2", "--no-plots", "--out", str(out), *model_args]) == 0
    report = read_csv(out / "class_report.csv")
    assert [row["class"] for row in report] == ["Adrien_Brody", "Ann_Veneman"]
