"""Enrolment: photo selection, folder sync and reports, on real photos."""

import shutil

import cv2
import numpy as np
import pytest

from conftest import KNN, LFW, require
from edgeface.config import load_config
from edgeface.detection import Face
from edgeface.enrolment import EnrolmentRules, NothingEnrolledError, choose_face, sync_gallery
from edgeface.errors import EdgefaceError, GalleryError
from edgeface.gallery import GALLERY_FILE, Gallery
from edgeface.pipeline import Pipeline


def face(width, height):
    return Face(box=(0.0, 0.0, float(width), float(height)), landmarks=np.zeros((5, 2)), score=0.9)


def test_single_face_is_used():
    chosen, reason = choose_face([face(100, 100)], 2.0)
    assert chosen is not None
    assert reason == ""


def test_dominant_face_is_used():
    chosen, _ = choose_face([face(100, 100), face(60, 60)], 2.0)
    assert chosen.box[2] == 100


def test_faces_of_similar_size_are_skipped():
    chosen, reason = choose_face([face(100, 100), face(80, 80)], 2.0)
    assert chosen is None
    assert "2 faces" in reason
    assert "1.6x" in reason


def test_no_face_is_skipped():
    chosen, reason = choose_face([], 2.0)
    assert chosen is None
    assert reason == "no face found"


@pytest.fixture(scope="module")
def pipeline(yunet_model, mobilefacenet):
    config = load_config(
        None,
        {"detector.backend": "yunet", "detector.yunet_model": str(yunet_model), "embedder.model": str(mobilefacenet)},
    )
    return Pipeline.from_config(config)


@pytest.fixture
def people(tmp_path):
    folder = tmp_path / "people"
    shutil.copytree(require(KNN / "train"), folder)
    return folder


def by_person(result):
    return {r.person: r for r in result.people}


def test_first_sync_adds_everyone(tmp_path, people, pipeline):
    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    assert {p: r.action for p, r in reports.items()} == {
        "alex_lacamoire": "added",
        "biden": "added",
        "kit_harington": "added",
        "obama": "added",
        "rose_leslie": "added",
    }
    assert reports["obama"].used == 2
    gallery = Gallery.load(tmp_path / "g")
    assert len(gallery) == 9


def test_second_sync_adds_changes_and_removes(tmp_path, people, pipeline):
    sync_gallery(people, tmp_path / "g", pipeline)
    before = Gallery.load(tmp_path / "g")

    shutil.rmtree(people / "biden")
    shutil.copy(KNN / "test" / "obama1.jpg", people / "obama" / "obama3.jpg")
    shutil.copytree(KNN / "train" / "biden", people / "joe")

    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    assert reports["biden"].action == "removed"
    assert reports["joe"].action == "added"
    assert reports["obama"].action == "changed"
    assert reports["obama"].embedded == 1
    assert reports["rose_leslie"].action == "unchanged"
    assert reports["rose_leslie"].embedded == 0

    after = Gallery.load(tmp_path / "g")
    assert after.people == ["alex_lacamoire", "joe", "kit_harington", "obama", "rose_leslie"]
    np.testing.assert_array_equal(after.vector_of("rose_leslie", "img1.jpg"), before.vector_of("rose_leslie", "img1.jpg"))


def test_bad_photos_reported_and_not_enrolled(tmp_path, people, pipeline):
    (people / "obama" / "notes.txt").write_text("phone: 555")
    (people / "obama" / "broken.jpg").write_bytes((KNN / "train" / "obama" / "obama.jpg").read_bytes()[:3000])
    shutil.copy(KNN / "test" / "obama_and_biden.jpg", people / "obama" / "group.jpg")
    blank = np.full((200, 200, 3), 128, dtype=np.uint8)
    cv2.imwrite(str(people / "obama" / "wall.png"), blank)

    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    skipped = dict(reports["obama"].skipped)
    assert set(skipped) == {"notes.txt", "broken.jpg", "group.jpg", "wall.png"}
    assert "not a supported image" in skipped["notes.txt"]
    assert "truncated" in skipped["broken.jpg"].lower()
    assert "faces and none dominant" in skipped["group.jpg"]
    assert skipped["wall.png"].startswith("no face found")
    assert reports["obama"].used == 2
    assert set(Gallery.load(tmp_path / "g").photos["obama"]) == {"obama.jpg", "obama2.jpg"}


def test_dominant_face_photo_enrolled(tmp_path, people, pipeline):
    # Obama large, with a small copy of Biden's face pasted in a corner.
    obama = cv2.imread(str(KNN / "train" / "obama" / "obama.jpg"))
    biden = cv2.imread(str(KNN / "train" / "biden" / "biden.jpg"))
    small = cv2.resize(biden, (biden.shape[1] // 4, biden.shape[0] // 4))
    obama[: small.shape[0], : small.shape[1]] = small
    for other in (people / "obama").iterdir():
        other.unlink()
    cv2.imwrite(str(people / "obama" / "with_friend.jpg"), obama)

    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    assert reports["obama"].used == 1
    assert reports["obama"].skipped == []


def test_person_without_usable_photo_not_enrolled(tmp_path, people, pipeline):
    for photo in (people / "alex_lacamoire").iterdir():
        photo.unlink()
    (people / "alex_lacamoire" / "empty.jpg").write_bytes(b"")
    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    assert reports["alex_lacamoire"].action == "not enrolled"
    assert "alex_lacamoire" not in Gallery.load(tmp_path / "g").people


def test_missing_people_folder_leaves_gallery_untouched(tmp_path, people, pipeline):
    sync_gallery(people, tmp_path / "g", pipeline)
    before = (tmp_path / "g" / GALLERY_FILE).read_bytes()
    with pytest.raises(EdgefaceError, match="not found"):
        sync_gallery(tmp_path / "no-such-stick", tmp_path / "g", pipeline)
    assert (tmp_path / "g" / GALLERY_FILE).read_bytes() == before


def test_empty_people_folder_leaves_gallery_untouched(tmp_path, people, pipeline):
    sync_gallery(people, tmp_path / "g", pipeline)
    before = (tmp_path / "g" / GALLERY_FILE).read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EdgefaceError, match="no person folders"):
        sync_gallery(empty, tmp_path / "g", pipeline)
    assert (tmp_path / "g" / GALLERY_FILE).read_bytes() == before


def test_corrupt_gallery_rebuilt_from_photos(tmp_path, people, pipeline):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / GALLERY_FILE).write_bytes(b"garbage")
    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    assert reports["obama"].action == "added"
    assert len(Gallery.load(tmp_path / "g")) == 9


def test_nested_folders_not_enrolled_as_one_person(tmp_path, people, pipeline):
    sync_gallery(people, tmp_path / "g", pipeline)
    before = (tmp_path / "g" / GALLERY_FILE).read_bytes()

    # The stick's root one level too high: every photo sits in a sub-folder.
    wrapped = tmp_path / "wrapped"
    shutil.copytree(people, wrapped / "all")
    with pytest.raises(NothingEnrolledError, match="left unchanged") as caught:
        sync_gallery(wrapped, tmp_path / "g", pipeline)
    assert (tmp_path / "g" / GALLERY_FILE).read_bytes() == before
    report = by_person(caught.value.result)["all"]
    assert report.action == "not enrolled"
    assert ("obama/", "sub-folder ignored: put this person's photos directly in their folder") in report.skipped


def test_stick_with_only_empty_folder_keeps_gallery(tmp_path, people, pipeline):
    sync_gallery(people, tmp_path / "g", pipeline)
    before = (tmp_path / "g" / GALLERY_FILE).read_bytes()
    stick = tmp_path / "stick"
    (stick / "lost+found").mkdir(parents=True)
    (stick / "new-person").mkdir()
    with pytest.raises(NothingEnrolledError):
        sync_gallery(stick, tmp_path / "g", pipeline)
    assert (tmp_path / "g" / GALLERY_FILE).read_bytes() == before


def test_hidden_files_and_folders_ignored(tmp_path, people, pipeline):
    (people / "obama" / ".thumbs").mkdir()
    shutil.copy(KNN / "train" / "biden" / "biden.jpg", people / "obama" / ".thumbs" / "t.jpg")
    shutil.copy(KNN / "train" / "biden" / "biden.jpg", people / "obama" / "._obama.jpg")
    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    assert reports["obama"].skipped == []
    assert set(Gallery.load(tmp_path / "g").photos["obama"]) == {"obama.jpg", "obama2.jpg"}


def test_photo_of_someone_else_skipped_as_mixup(tmp_path, people, pipeline):
    sync_gallery(people, tmp_path / "g", pipeline, EnrolmentRules(match_threshold=1.05))
    # Biden's face in a new photo filed under Obama: nearer to Biden than to Obama's photos.
    biden = cv2.imread(str(KNN / "train" / "biden" / "biden.jpg"))
    cv2.imwrite(str(people / "obama" / "mixup.jpg"), cv2.flip(biden, 1))

    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline, EnrolmentRules(match_threshold=1.05)))
    skipped = dict(reports["obama"].skipped)
    assert set(skipped) == {"mixup.jpg"}
    assert skipped["mixup.jpg"].startswith("likely mix-up: the face is nearer to biden")
    assert reports["obama"].action == "unchanged"
    assert reports["biden"].action == "unchanged"
    assert set(Gallery.load(tmp_path / "g").photos["obama"]) == {"obama.jpg", "obama2.jpg"}


def test_photo_of_a_stranger_gets_warning(tmp_path, people, pipeline):
    stranger = sorted(require(LFW / "images" / "Aaron_Eckhart").iterdir())[0]
    shutil.copy(stranger, people / "obama" / "stranger.jpg")
    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline, EnrolmentRules(match_threshold=1.05)))
    assert {photo for photo, _ in reports["obama"].warnings} == {"stranger.jpg"}
    message = dict(reports["obama"].warnings)["stranger.jpg"]
    assert "check that it shows the same person" in message
    assert reports["obama"].used == 3


def test_person_losing_all_photos_reported_removed(tmp_path, people, pipeline):
    sync_gallery(people, tmp_path / "g", pipeline)
    for photo in (people / "obama").iterdir():
        photo.unlink()
    (people / "obama" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    assert reports["obama"].action == "removed"
    assert "obama" not in Gallery.load(tmp_path / "g").people


def test_gallery_path_that_is_a_file_rejected(tmp_path, people, pipeline):
    target = tmp_path / "gallery.npz"
    target.write_bytes(b"keep me")
    with pytest.raises(GalleryError, match="cannot write a gallery"):
        sync_gallery(people, target, pipeline)
    assert target.read_bytes() == b"keep me"


def test_same_photo_for_two_people_warned(tmp_path, people, pipeline):
    shutil.copy(KNN / "train" / "obama" / "obama.jpg", people / "biden" / "copy.jpg")
    reports = by_person(sync_gallery(people, tmp_path / "g", pipeline))
    assert ("copy.jpg", "the same photo is also enrolled for obama") in reports["biden"].warnings
    assert ("obama.jpg", "the same photo is also enrolled for biden") in reports["obama"].warnings
