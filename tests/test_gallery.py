"""Gallery: distance units, persistence, atomic save and the model check."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeface.errors import GalleryError, ModelMismatchError
from edgeface.gallery import GALLERY_FILE, Gallery


def unit(values):
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def make_gallery(dim=4):
    gallery = Gallery(model_name="test-model", fingerprint="abc123", dim=dim)
    gallery.replace_person("ana", {"a.jpg": ("h1", unit([1, 0, 0, 0])), "b.jpg": ("h2", unit([1, 1, 0, 0]))})
    gallery.replace_person("bo", {"c.jpg": ("h3", unit([0, 0, 1, 0]))})
    return gallery


def test_search_returns_plain_euclidean_distance():
    gallery = make_gallery()
    query = unit([1, 0, 0, 0])
    distances, people = gallery.search(query[None], k=3)
    # [1,0,0,0] to [1,1,0,0]/sqrt(2): cos = 1/sqrt(2), d = sqrt(2 - sqrt(2)) = 0.7654.
    # [1,0,0,0] to [0,0,1,0]: orthogonal, d = sqrt(2) = 1.4142 (not 2, the squared value).
    assert people[0] == ["ana", "ana", "bo"]
    assert distances[0][0] == pytest.approx(0.0, abs=1e-3)
    assert distances[0][1] == pytest.approx(np.sqrt(2 - np.sqrt(2)), abs=1e-5)
    assert distances[0][2] == pytest.approx(np.sqrt(2), abs=1e-5)


def test_opposite_vectors_are_distance_two():
    gallery = Gallery(model_name="m", fingerprint="f", dim=2)
    gallery.replace_person("ana", {"a": ("h", unit([1, 0]))})
    distances, _ = gallery.search(unit([-1, 0])[None], k=1)
    assert distances[0][0] == pytest.approx(2.0, abs=1e-6)


def test_search_with_k_above_size_returns_all():
    gallery = make_gallery()
    distances, people = gallery.search(unit([0, 0, 1, 0])[None], k=10)
    assert distances.shape == (1, 3)
    assert people[0][0] == "bo"


def test_search_of_empty_gallery_returns_nothing():
    gallery = Gallery(model_name="m", fingerprint="f", dim=4)
    distances, people = gallery.search(unit([1, 0, 0, 0])[None], k=5)
    assert distances.shape == (1, 0)
    assert people == [[]]


def test_save_and_load_round_trip(tmp_path):
    gallery = make_gallery()
    gallery.save(tmp_path)
    loaded = Gallery.load(tmp_path)
    assert loaded.people == ["ana", "bo"]
    assert loaded.labels == gallery.labels
    assert loaded.photos["ana"]["b.jpg"].sha256 == "h2"
    np.testing.assert_allclose(loaded.vector_of("bo", "c.jpg"), unit([0, 0, 1, 0]))
    distances, people = loaded.search(unit([0, 0, 1, 0])[None], k=1)
    assert people[0] == ["bo"]


def test_remove_person_keeps_others_searchable():
    gallery = make_gallery()
    gallery.remove_person("ana")
    assert gallery.people == ["bo"]
    assert len(gallery) == 1
    np.testing.assert_allclose(gallery.vector_of("bo", "c.jpg"), unit([0, 0, 1, 0]))
    _, people = gallery.search(unit([1, 0, 0, 0])[None], k=5)
    assert people[0] == ["bo"]


def test_replace_person_drops_old_photos():
    gallery = make_gallery()
    gallery.replace_person("ana", {"new.jpg": ("h9", unit([0, 1, 0, 0]))})
    assert list(gallery.photos["ana"]) == ["new.jpg"]
    assert len(gallery) == 2


def test_replace_people_adds_changes_and_removes():
    gallery = make_gallery()
    gallery.replace_people({"bo": {}, "cy": {"d.jpg": ("h4", unit([0, 0, 0, 1]))}, "ana": {"e.jpg": ("h5", unit([0, 1, 0, 0]))}})
    assert gallery.people == ["ana", "cy"]
    assert len(gallery) == 2
    np.testing.assert_allclose(gallery.vector_of("cy", "d.jpg"), unit([0, 0, 0, 1]))
    np.testing.assert_allclose(gallery.vector_of("ana", "e.jpg"), unit([0, 1, 0, 0]))
    _, people = gallery.search(unit([0, 0, 0, 1])[None], k=1)
    assert people[0] == ["cy"]


def test_other_model_rejected():
    gallery = make_gallery()
    with pytest.raises(ModelMismatchError, match="test-model"):
        gallery.check_model("other-model", "ffff0000")
    gallery.check_model("test-model", "abc123")


def test_missing_gallery_says_how_to_enrol(tmp_path):
    with pytest.raises(GalleryError, match="edgeface enroll"):
        Gallery.load(tmp_path)


def test_corrupt_gallery_rejected(tmp_path):
    (tmp_path / GALLERY_FILE).write_bytes(b"not a gallery")
    with pytest.raises(GalleryError, match="corrupt"):
        Gallery.load(tmp_path)


def test_truncated_gallery_rejected(tmp_path):
    make_gallery().save(tmp_path)
    path = tmp_path / GALLERY_FILE
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(GalleryError):
        Gallery.load(tmp_path)


SAVE_LOOP = """
import sys
import numpy as np
from edgeface.gallery import Gallery

# One 40 MB gallery saved over and over, so that most of the process's time,
# and most kill moments, fall inside a save.
folder = sys.argv[1]
vectors = np.random.default_rng(0).normal(size=(20000, 512)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
gallery = Gallery(model_name="gen0", fingerprint="f", dim=512)
for person in range(100):
    rows = vectors[person * 200 : (person + 1) * 200]
    gallery.replace_person(f"p{person:03d}", {f"{i:03d}.jpg": ("h", v) for i, v in enumerate(rows)})
print("ready", flush=True)
generation = 0
while True:
    generation += 1
    gallery.model_name = f"gen{generation}"
    gallery.save(folder)
"""


def test_killed_save_leaves_a_whole_gallery(tmp_path):
    # Kill a process that saves a gallery in a loop at random moments: every
    # time, the file on disk must load whole, with every vector intact.
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    expected = np.random.default_rng(0).normal(size=(20000, 512)).astype(np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    rng = np.random.default_rng(1)
    generations = set()
    for attempt in range(6):
        process = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(tmp_path)], stdout=subprocess.PIPE, env=env)
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(0.2 + rng.uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait()

        if not (tmp_path / GALLERY_FILE).exists():
            continue
        gallery = Gallery.load(tmp_path)
        assert len(gallery) == 20000
        assert gallery.people[-1] == "p099"
        np.testing.assert_array_equal(gallery.vector_of("p042", "007.jpg"), expected[42 * 200 + 7])
        np.testing.assert_array_equal(gallery.vectors, expected)
        generations.add(gallery.model_name)
    assert generations, "no save completed in any attempt"


def test_empty_gallery_file_rejected(tmp_path):
    (tmp_path / GALLERY_FILE).write_bytes(b"")
    with pytest.raises(GalleryError, match="corrupt"):
        Gallery.load(tmp_path)


def test_gallery_folder_that_is_a_file_rejected(tmp_path):
    target = tmp_path / "g"
    target.write_text("x")
    with pytest.raises(GalleryError, match="is a file"):
        Gallery.load(target)


def test_hand_made_metadata_rejected(tmp_path):
    import json

    make_gallery().save(tmp_path)
    with np.load(tmp_path / GALLERY_FILE) as data:
        index = data["index"]
        meta = json.loads(data["meta"].tobytes())
    for broken in ({**meta, "photos": []}, [1, 2], {**meta, "labels": meta["labels"][:1]}):
        with open(tmp_path / GALLERY_FILE, "wb") as handle:
            np.savez(handle, meta=np.frombuffer(json.dumps(broken).encode(), dtype=np.uint8), index=index)
        with pytest.raises(GalleryError):
            Gallery.load(tmp_path)


def test_failed_save_keeps_previous_gallery(tmp_path):
    make_gallery().save(tmp_path)
    before = (tmp_path / GALLERY_FILE).read_bytes()
    # A folder where the temporary file should go makes the write fail.
    (tmp_path / (GALLERY_FILE + ".tmp")).mkdir()
    other = Gallery(model_name="other", fingerprint="f", dim=4)
    with pytest.raises(GalleryError, match="previous gallery is unchanged"):
        other.save(tmp_path)
    assert (tmp_path / GALLERY_FILE).read_bytes() == before


def test_options_and_display_names_round_trip(tmp_path):
    from edgeface.people import parse_options

    gallery = make_gallery()
    schedule = parse_options('schedule: [{days: [mon, sat], from: "22:00", to: "06:00"}]\n')
    gallery.set_details("ana", "Ana\u0301", schedule)
    gallery.set_details("bo", "bo", parse_options("disabled: true\n"))
    gallery.save(tmp_path)

    loaded = Gallery.load(tmp_path)
    assert loaded.display_name("ana") == "Ana\u0301"
    assert loaded.display_name("bo") == "bo"
    assert loaded.display_name("nobody") == "nobody"
    assert loaded.options_of("ana") == schedule
    assert loaded.options_of("bo").disabled
    assert loaded.options_of("nobody").is_default


def test_removed_person_loses_options():
    from edgeface.people import parse_options

    gallery = make_gallery()
    gallery.set_details("bo", "Bo", parse_options("disabled: true\n"))
    gallery.replace_people({"bo": {}})
    assert gallery.options_of("bo").is_default
    assert gallery.display_name("bo") == "bo"


def test_format_1_gallery_still_loads(tmp_path):
    import json

    make_gallery().save(tmp_path)
    with np.load(tmp_path / GALLERY_FILE) as data:
        index = data["index"]
        meta = json.loads(data["meta"].tobytes())
    old = {key: meta[key] for key in ("model_name", "fingerprint", "dim", "labels")}
    old["format"] = 1
    old["photos"] = {p: {n: {"sha256": r["sha256"], "row": r["row"]} for n, r in recs.items()} for p, recs in meta["photos"].items()}
    with open(tmp_path / GALLERY_FILE, "wb") as handle:
        np.savez(handle, meta=np.frombuffer(json.dumps(old).encode(), dtype=np.uint8), index=index)

    loaded = Gallery.load(tmp_path)
    assert loaded.people == ["ana", "bo"]
    assert loaded.options_of("ana").is_default
    assert loaded.photos["ana"]["a.jpg"].sharpness is None


def test_invalid_stored_options_rejected(tmp_path):
    import json

    make_gallery().save(tmp_path)
    with np.load(tmp_path / GALLERY_FILE) as data:
        index = data["index"]
        meta = json.loads(data["meta"].tobytes())
    meta["options"] = {"ana": {"disabled": "sometimes"}}
    with open(tmp_path / GALLERY_FILE, "wb") as handle:
        np.savez(handle, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), index=index)
    with pytest.raises(GalleryError, match="invalid metadata"):
        Gallery.load(tmp_path)


def test_second_lock_on_gallery_rejected(tmp_path):
    from edgeface.gallery import locked

    with locked(tmp_path):
        with pytest.raises(GalleryError, match="another enrolment is updating"):
            with locked(tmp_path):
                pass
    with locked(tmp_path):
        pass


def test_closest_people_of_known_vectors():
    gallery = Gallery(model_name="m", fingerprint="f", dim=2)
    unit = lambda degrees: np.array([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], np.float32)  # noqa: E731
    gallery.replace_people({
        "ann": {"a.jpg": ("a" * 64, unit(0)), "b.jpg": ("b" * 64, unit(5))},
        "bob": {"c.jpg": ("c" * 64, unit(60))},
        "cy": {"d.jpg": ("d" * 64, unit(180))},
    })
    first, second, distance = gallery.closest_people()
    # ann's photo at 5 degrees is nearest to bob's at 60: 55 degrees apart.
    assert (first, second) == ("ann", "bob")
    assert distance == pytest.approx(2 * np.sin(np.radians(55) / 2), abs=1e-5)
    assert Gallery(model_name="m", fingerprint="f", dim=2).closest_people() is None
