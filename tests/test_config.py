"""Configuration loading and validation."""

from pathlib import Path

import pytest
import yaml

from edgeface.config import defaults, load_config
from edgeface.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_documented_config_matches_defaults():
    documented = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert documented == defaults()


def test_documented_config_loads():
    config = load_config(ROOT / "config.yaml")
    assert config["matching"]["k1"] == 3
    assert config["embedder"]["model"] == str(ROOT / "models" / "dlib_resnet_v1.onnx")


def test_partial_file_keeps_other_defaults(tmp_path):
    config = load_config(write(tmp_path, "matching:\n  threshold: 0.8\n"))
    assert config["matching"]["threshold"] == 0.8
    assert config["matching"]["k2"] == defaults()["matching"]["k2"]


def test_relative_paths_resolve_against_file_folder(tmp_path):
    config = load_config(write(tmp_path, "embedder:\n  model: m/x.onnx\n"))
    assert config["embedder"]["model"] == str(tmp_path / "m" / "x.onnx")


def test_integer_accepted_for_float(tmp_path):
    config = load_config(write(tmp_path, "matching:\n  threshold: 1\n"))
    assert config["matching"]["threshold"] == 1.0


@pytest.mark.parametrize(
    "text, key",
    [
        ("matching:\n  threshhold: 0.5\n", "matching.threshhold"),
        ("matcher:\n  k1: 2\n", "matcher"),
        ("matching:\n  threshold: 2.5\n", "matching.threshold"),
        ("matching:\n  threshold: high\n", "matching.threshold"),
        ("matching:\n  k1: 2.5\n", "matching.k1"),
        ("matching:\n  k1: true\n", "matching.k1"),
        ("matching:\n  threshold: .nan\n", "matching.threshold"),
        ("matching:\n  threshold: -1\n", "matching.threshold"),
        ("matching:\n  margin: 2\n", "matching.margin"),
        ("detector:\n  dlib_score_threshold: .inf\n", "detector.dlib_score_threshold"),
        ("matching:\n  k1: 0\n", "matching.k1"),
        ("matching:\n  k1: 5\n  k2: 5\n", "matching.k2"),
        ("detector:\n  backend: mtcnn\n", "detector.backend"),
        ("embedder:\n  allow_untrained: 'yes'\n", "embedder.allow_untrained"),
        ("embedder:\n  model: null\n", "embedder.model"),
        ("matching: 3\n", "matching"),
        ("- a\n- b\n", "top level"),
    ],
)
def test_invalid_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert key in str(caught.value)


def test_invalid_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "matching: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_non_utf8_file_rejected(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"matching:\n  k1: 2 # caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_command_line_override_wins(tmp_path):
    config = load_config(write(tmp_path, "matching:\n  k1: 2\n"), {"matching.k1": 4, "matching.k2": None})
    assert config["matching"]["k1"] == 4
    assert config["matching"]["k2"] == 5


def test_command_line_override_validated():
    with pytest.raises(ConfigError, match="matching.threshold"):
        load_config(None, {"matching.threshold": 3.0})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"decision.window_seconds": 0.1}, "decision.window_seconds"),
        ({"camera.max_fps": 1.0, "decision.window_seconds": 1.5}, "decision.window_seconds"),
        ({"decision.track_timeout": 0.2, "camera.max_fps": 4.0}, "decision.track_timeout"),
    ],
)
def test_decision_timing_that_never_grants_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_threshold_matching_opposite_vectors_rejected():
    # Above 1.4 (cosine below 0), vectors pointing apart would match: no model is used that way.
    with pytest.raises(ConfigError, match="matching.threshold is 2.0, above its maximum 1.4"):
        load_config(None, {"matching.threshold": 2.0})
