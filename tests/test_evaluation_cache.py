"""The evaluation's embedding cache: reuse, cached failures and corrupt files."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from conftest import LFW, require
from edgeface.config import load_config
from edgeface.evaluation.cache import ResultCache
from edgeface.evaluation.embeddings import Embedding
from edgeface.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipeline_config(dlib_resnet, yunet_model):
    return load_config(None, {"detector.backend": "yunet", "detector.yunet_model": str(yunet_model), "embedder.model": str(dlib_resnet)})


@pytest.fixture(scope="module")
def pipeline(pipeline_config):
    return Pipeline.from_config(pipeline_config)


@pytest.fixture()
def images(tmp_path):
    faces = sorted((require(LFW) / "images" / "Ann_Veneman").glob("*.jpg"))[:3]
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 120), (200, 200, 200)).save(blank)
    return [*faces, blank]


def test_result_cache_round_trip(tmp_path):
    cache = ResultCache(tmp_path / "c.npz", 3)
    cache.put("a" * 64, np.array([1.0, 2.0, 3.0]))
    cache.put("b" * 64, None, "no face found")
    cache.save()

    again = ResultCache(tmp_path / "c.npz", 3)
    row, reason = again.get("a" * 64)
    assert row.tolist() == [1.0, 2.0, 3.0]
    assert reason == ""
    assert again.get("b" * 64) == (None, "no face found")
    assert len(again) == 2


def test_result_cache_ignores_corrupt_file(tmp_path, caplog):
    path = tmp_path / "c.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with caplog.at_level(logging.WARNING):
        cache = ResultCache(path, 3)
    assert len(cache) == 0
    assert "rebuilding" in caplog.text

    cache.put("a" * 64, np.zeros(3))
    cache.save()
    assert len(ResultCache(path, 3)) == 1


def test_result_cache_ignores_other_width(tmp_path, caplog):
    cache = ResultCache(tmp_path / "c.npz", 3)
    cache.put("a" * 64, np.zeros(3))
    cache.save()
    with caplog.at_level(logging.WARNING):
        assert len(ResultCache(tmp_path / "c.npz", 4)) == 0
    assert "does not match" in caplog.text


def test_second_run_embeds_nothing(tmp_path, pipeline, pipeline_config, images, monkeypatch):
    first = Embedding(pipeline, pipeline_config, tmp_path / "cache").embed(images)
    assert first.embedded == 3
    assert first.reasons[3].startswith("no face found")
    assert first.ok.tolist() == [True, True, True, False]

    # The cached run must neither detect nor embed, failures included.
    def fail(*args, **kwargs):
        raise AssertionError("the pipeline ran on a cached image")

    monkeypatch.setattr(pipeline, "detect", fail)
    monkeypatch.setattr(pipeline, "embed", fail)
    second = Embedding(pipeline, pipeline_config, tmp_path / "cache").embed(images)
    assert second.embedded == 0
    assert second.reasons == first.reasons
    np.testing.assert_array_equal(second.vectors[:3], first.vectors[:3])


def test_corrupt_cache_is_rebuilt(tmp_path, pipeline, pipeline_config, images):
    embedding = Embedding(pipeline, pipeline_config, tmp_path / "cache")
    first = embedding.embed(images[:2])
    for cache_file in (tmp_path / "cache").glob("*.npz"):
        cache_file.write_bytes(cache_file.read_bytes()[:100])

    rebuilt = Embedding(pipeline, pipeline_config, tmp_path / "cache").embed(images[:2])
    assert rebuilt.embedded == 2
    np.testing.assert_allclose(rebuilt.vectors, first.vectors, atol=1e-6)
    assert Embedding(pipeline, pipeline_config, tmp_path / "cache").embed(images[:2]).embedded == 0


def test_cache_key_changes_with_detector(tmp_path, pipeline, pipeline_config, dlib_resnet, images):
    Embedding(pipeline, pipeline_config, tmp_path / "cache").embed(images[:1])
    other_config = load_config(None, {"detector.backend": "dlib", "embedder.model": str(dlib_resnet)})
    other = Embedding(Pipeline.from_config(other_config), other_config, tmp_path / "cache")
    assert other.embed(images[:1]).embedded == 1


def test_cached_detections_give_same_vectors(tmp_path, dlib_resnet, yunet_model, images):
    # The int8 model, whose dynamic quantisation amplifies tiny input changes.
    overrides = {
        "detector.backend": "yunet",
        "detector.yunet_model": str(yunet_model),
        "embedder.model": str(dlib_resnet.with_name("dlib_resnet_v1.int8.onnx")),
    }
    config = load_config(None, overrides)
    pipeline = Pipeline.from_config(config)
    first = Embedding(pipeline, config, tmp_path / "cache").embed(images[:3])
    for cache_file in (tmp_path / "cache").glob("vectors-*.npz"):
        cache_file.unlink()

    # Only the detections are cached now, so the model runs on cached faces.
    second = Embedding(pipeline, config, tmp_path / "cache").embed(images[:3])
    assert second.embedded == 3
    np.testing.assert_array_equal(second.vectors, first.vectors)
