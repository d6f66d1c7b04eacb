"""Enrolment from a USB stick: bad files, names, options, reports and kill -9, on real faces."""

import datetime
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import KNN, LFW, MOBILEFACENET, ROOT, YUNET, require
from edgeface.cli import main
from edgeface.config import load_config
from edgeface.enrolment import EnrolmentRules
from edgeface.gallery import GALLERY_FILE, PHOTOS_FOLDER, Gallery
from edgeface.imageio import heif_decoder_available
from edgeface.people import PersonOptions, PersonOptionsError, parse_options
from edgeface.pipeline import Pipeline
from edgeface.sync import REMOVE_EVERYONE_MARKER, REPORT_FILE, SyncError, find_people_dir, sync_stick

# MobileFaceNet's distances: same person below about 1.05.
RULES = EnrolmentRules(match_threshold=1.05)


@pytest.fixture(scope="module")
def settings(yunet_model, mobilefacenet):
    return {"detector.backend": "yunet", "detector.yunet_model": str(yunet_model), "embedder.model": str(mobilefacenet)}


@pytest.fixture(scope="module")
def pipeline(settings):
    return Pipeline.from_config(load_config(None, settings))


@pytest.fixture
def stick(tmp_path):
    """A stick's root with the five knn-examples people in edgeface/people/."""
    root = tmp_path / "stick"
    shutil.copytree(require(KNN / "train"), root / "edgeface" / "people")
    return root


def people_of(root):
    return root / "edgeface" / "people"


def files_of(report):
    return {entry.path: (entry.status, entry.reason) for entry in report.files}


def lfw_photo(name, number=1):
    return require(LFW / "images" / name / f"{name}_{number:04d}.jpg")


def write_rgb(path, rgb):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def add_bad_corpus(root, outside):
    """Fill the stick with the bad files a user brings, next to good ones; return the folder of new people."""
    people = people_of(root)
    obama = read_rgb(KNN / "train" / "obama" / "obama.jpg")

    # One new person, Aaron Eckhart, whose face is saved in every format, some under a wrong extension.
    aaron = people / "Aaron Eckhart"
    aaron.mkdir()
    face = read_rgb(lfw_photo("Aaron_Eckhart"))
    shutil.copy(lfw_photo("Aaron_Eckhart"), aaron / "a.jpg")
    for extension in ("png", "bmp", "tif", "webp", "ppm"):
        write_rgb(aaron / f"a.{extension}", face)
    cv2.imwrite(str(aaron / "grey.pgm"), cv2.cvtColor(face, cv2.COLOR_RGB2GRAY))
    Image.fromarray(face).convert("P", palette=Image.Palette.ADAPTIVE).save(aaron / "a.gif")
    shutil.copy(aaron / "a.png", aaron / "png-named.jpg")
    shutil.copy(aaron / "a.png", aaron / "no-extension")

    # Files that must be skipped with a reason, in the folder of an enrolled person.
    folder = people / "obama"
    (folder / "notes.jpg").write_text("this is text, not a photo")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes((KNN / "train" / "obama" / "obama.jpg").read_bytes()[:5000])
    write_rgb(folder / "wall.png", np.full((240, 320, 3), 128, dtype=np.uint8))
    shutil.copy(KNN / "test" / "obama_and_biden.jpg", folder / "two.jpg")
    eyes = 107.5  # YuNet's eye distance on obama.jpg, in pixels
    small = cv2.resize(obama, None, fx=18 / eyes, fy=18 / eyes, interpolation=cv2.INTER_AREA)
    write_rgb(folder / "tiny.png", small)
    write_rgb(folder / "blurry.png", cv2.GaussianBlur(obama, (0, 0), 13.0))
    (folder / "fake.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    (folder / "album").mkdir()
    shutil.copy(KNN / "train" / "obama" / "obama.jpg", folder / "album" / "x.jpg")
    os.mkfifo(folder / "pipe.jpg")

    # Files that must be ignored.
    (people / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "._obama.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    (folder / "Thumbs.db").write_bytes(bytes(50))

    # Links and stray files: a link out of the stick, a link inside it, a photo outside any person folder.
    shutil.copy(KNN / "train" / "obama" / "obama.jpg", outside / "face.jpg")
    (folder / "escape.jpg").symlink_to(outside / "face.jpg")
    (folder / "inside.jpg").symlink_to(Path("..") / "obama" / "obama2.jpg")
    (people / "Outsider").symlink_to(outside, target_is_directory=True)
    shutil.copy(KNN / "train" / "obama" / "obama.jpg", people / "loose.jpg")

    # The same face under two names: Biden's photos in a new folder.
    shutil.copytree(KNN / "train" / "biden", people / "Joe")

    # A new person whose only photo is unusable.
    (people / "Nobody").mkdir()
    write_rgb(people / "Nobody" / "wall.png", np.full((100, 100, 3), 90, dtype=np.uint8))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_bad_corpus_outcomes(tmp_path, stick, pipeline):
    gallery = tmp_path / "gallery"
    first = sync_stick(stick, gallery, pipeline, RULES)
    assert first.status == "ok"
    before = Gallery.load(gallery)
    outside = tmp_path / "outside"
    outside.mkdir()
    add_bad_corpus(stick, outside)

    report = sync_stick(stick, gallery, pipeline, RULES)
    files = files_of(report)
    assert report.status == "partial"
    assert report.exit_status == 1

    names = ("a.jpg", "a.png", "a.bmp", "a.gif", "a.tif", "a.webp", "a.ppm", "grey.pgm", "png-named.jpg", "no-extension")
    for name in names:
        assert files[f"Aaron Eckhart/{name}"] == ("enrolled", ""), name
    assert files["obama/obama.jpg"] == ("unchanged", "")
    assert files["obama/inside.jpg"] == ("enrolled", "")

    def reason(path, status="skipped"):
        assert files[path][0] == status, (path, files[path])
        return files[path][1]

    assert reason("obama/notes.jpg").startswith("not a supported image")
    assert reason("obama/zero.jpg").startswith("the file is empty (0 bytes)")
    assert "truncated" in reason("obama/truncated.jpg")
    assert reason("obama/wall.png").startswith("no face found")
    assert "faces and none dominant" in reason("obama/two.jpg")
    assert reason("obama/tiny.png").startswith("face too small: eyes 19 px apart, needs 25")
    assert reason("obama/blurry.png").startswith("face too blurry")
    if heif_decoder_available():
        assert "corrupt" in reason("obama/fake.heic")
    else:
        assert "HEIC photos need pillow-heif: pip install pillow-heif" in reason("obama/fake.heic")
    assert reason("obama/album/").startswith("sub-folder ignored")
    assert reason("obama/pipe.jpg").startswith("not a regular file")
    assert reason("obama/escape.jpg").startswith("symbolic link that leads out of the stick")
    assert reason("Outsider").startswith("symbolic link that leads out of the stick")
    assert reason("loose.jpg").startswith("not a folder")
    assert reason(".DS_Store", "ignored") == "hidden file"
    assert reason("obama/.DS_Store", "ignored") == "hidden file"
    assert reason("obama/._obama.jpg", "ignored") == "AppleDouble file (macOS metadata)"
    assert reason("obama/Thumbs.db", "ignored") == "system file"
    for name in ("biden.jpg", "biden2.jpg"):
        assert "likely mix-up" in reason(f"Joe/{name}")
        assert "biden" in reason(f"Joe/{name}")

    actions = {person.display_name: person.action for person in report.result.people}
    assert actions == {
        "Aaron Eckhart": "added",
        "Joe": "not enrolled",
        "Nobody": "not enrolled",
        "alex_lacamoire": "unchanged",
        "biden": "unchanged",
        "kit_harington": "unchanged",
        "obama": "changed",
        "rose_leslie": "unchanged",
    }

    after = Gallery.load(gallery)
    assert after.people == ["Aaron Eckhart", "alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
    assert set(after.photos["obama"]) == {"obama.jpg", "obama2.jpg", "inside.jpg"}
    assert len(after.photos["Aaron Eckhart"]) == 10
    np.testing.assert_array_equal(after.vector_of("biden", "biden.jpg"), before.vector_of("biden", "biden.jpg"))


def test_same_face_under_two_names_on_first_sync(tmp_path, stick, pipeline):
    shutil.copytree(KNN / "train" / "biden", people_of(stick) / "Joe")
    report = sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    files = files_of(report)
    for path in ("Joe/biden.jpg", "biden/biden.jpg"):
        assert files[path][0] == "skipped"
        assert "same face in the same photo" in files[path][1]
    assert "Joe" not in Gallery.load(tmp_path / "gallery").people
    assert "biden" not in Gallery.load(tmp_path / "gallery").people


def test_nfc_and_nfd_names_are_one_person(tmp_path, stick, pipeline):
    nfd = unicodedata.normalize("NFD", "José Núñez")
    nfc = unicodedata.normalize("NFC", nfd)
    assert nfd != nfc
    (people_of(stick) / nfd).mkdir()
    shutil.copy(lfw_photo("Adam_Sandler"), people_of(stick) / nfd / "1.jpg")

    sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    gallery = Gallery.load(tmp_path / "gallery")
    assert nfc in gallery.people
    assert gallery.display_name(nfc) == nfd

    # The same stick copied on another system: the folder is now spelled in NFC.
    os.rename(people_of(stick) / nfd, people_of(stick) / nfc)
    report = sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    person = report.result.person(nfd)
    assert person.person == nfc
    assert person.embedded == 0
    assert Gallery.load(tmp_path / "gallery").people.count(nfc) == 1

    # Both spellings on one stick: one person with the photos of both folders.
    (people_of(stick) / nfd).mkdir()
    shutil.copy(lfw_photo("Adam_Sandler", 2), people_of(stick) / nfd / "2.jpg")
    report = sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    assert report.result.person(nfc).used == 2
    assert set(Gallery.load(tmp_path / "gallery").photos[nfc]) == {"1.jpg", "2.jpg"}


def test_empty_stick_keeps_gallery(tmp_path, stick, pipeline):
    gallery = tmp_path / "gallery"
    sync_stick(stick, gallery, pipeline, RULES)
    before = (gallery / GALLERY_FILE).read_bytes()
    shutil.rmtree(people_of(stick))
    people_of(stick).mkdir()

    with pytest.raises(SyncError, match="no person folders") as caught:
        sync_stick(stick, gallery, pipeline, RULES)
    assert caught.value.report.exit_status == 2
    assert (gallery / GALLERY_FILE).read_bytes() == before
    assert "FAILED, the gallery was not changed" in (stick / "edgeface" / REPORT_FILE).read_text()


def test_unusable_stick_refuses_to_remove_everyone(tmp_path, stick, pipeline):
    gallery = tmp_path / "gallery"
    sync_stick(stick, gallery, pipeline, RULES)
    before = (gallery / GALLERY_FILE).read_bytes()
    for photo in people_of(stick).glob("*/*"):
        photo.write_bytes(b"")

    with pytest.raises(SyncError, match="would remove every enrolled person"):
        sync_stick(stick, gallery, pipeline, RULES)
    assert (gallery / GALLERY_FILE).read_bytes() == before


def test_marker_removes_everyone(tmp_path, stick, pipeline):
    gallery = tmp_path / "gallery"
    sync_stick(stick, gallery, pipeline, RULES)
    shutil.rmtree(people_of(stick))
    people_of(stick).mkdir()
    (stick / "edgeface" / REMOVE_EVERYONE_MARKER).write_text("")

    report = sync_stick(stick, gallery, pipeline, RULES)
    assert report.result.removed_everyone
    assert {p.action for p in report.result.people} == {"removed"}
    assert Gallery.load(gallery).people == []
    assert len(Gallery.load(gallery)) == 0


def test_wrong_stick_changes_nothing(tmp_path, stick, pipeline):
    gallery = tmp_path / "gallery"
    sync_stick(stick, gallery, pipeline, RULES)
    before = (gallery / GALLERY_FILE).read_bytes()
    other = tmp_path / "holiday-photos"
    shutil.copytree(KNN / "train", other)

    with pytest.raises(SyncError, match="no edgeface/people/ folder"):
        sync_stick(other, gallery, pipeline, RULES)
    assert (gallery / GALLERY_FILE).read_bytes() == before
    assert not (other / "edgeface").exists()


def test_stick_folder_linked_off_the_stick_rejected(tmp_path, stick):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(stick / "edgeface", elsewhere)
    (stick / "edgeface").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(Exception, match="leads off the stick"):
        find_people_dir(stick)


def test_people_folder_accepted_as_source(stick):
    root, people = find_people_dir(people_of(stick))
    assert root == stick.resolve()
    assert people == people_of(stick)


def test_report_written_to_stick(tmp_path, stick, pipeline):
    (people_of(stick) / "obama" / "zero.jpg").write_bytes(b"")
    report = sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    text = (stick / "edgeface" / REPORT_FILE).read_text(encoding="utf-8")
    assert report.report_file == str(stick / "edgeface" / REPORT_FILE)
    assert text == report.as_text()
    assert "result:   gallery updated: 5 people enrolled (5 added), 1 file skipped" in text
    assert "obama: added, 2 photos used (2 embedded now)" in text
    assert "  zero.jpg: skipped: the file is empty (0 bytes)" in text
    assert not (stick / "edgeface" / (REPORT_FILE + ".tmp")).exists()

    data = report.as_dict()
    assert data["status"] == "partial"
    assert data["gallery_saved"] is True
    assert {p["display_name"]: p["photos_used"] for p in data["people"]}["obama"] == 2
    assert {"path": "obama/zero.jpg", "person": "obama", "status": "skipped"}.items() <= next(
        f for f in data["files"] if f["path"] == "obama/zero.jpg"
    ).items()


def test_read_only_stick_noted_not_failed(tmp_path, stick, pipeline, monkeypatch, caplog):
    def read_only(target, temporary, data):
        raise OSError(errno.EROFS, "Read-only file system", str(temporary))

    monkeypatch.setattr("edgeface.sync.write_atomically", read_only)
    caplog.set_level("INFO", logger="edgeface.sync")
    report = sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    assert report.status == "ok"
    assert report.report_file is None
    assert "read-only" in report.report_note
    assert "read-only" in caplog.text
    assert len(Gallery.load(tmp_path / "gallery").people) == 5


def test_report_link_on_stick_not_followed(tmp_path, stick, pipeline):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (stick / "edgeface" / (REPORT_FILE + ".tmp")).symlink_to(victim)
    (stick / "edgeface" / REPORT_FILE).symlink_to(victim)
    sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    assert victim.read_text() == "keep"
    assert not (stick / "edgeface" / REPORT_FILE).is_symlink()


def test_person_options_round_trip(tmp_path, stick, pipeline):
    (people_of(stick) / "obama" / "person.yaml").write_text(
        'schedule:\n  - days: [mon, tue, wed, thu, fri]\n    from: "07:30"\n    to: "18:00"\n'
        '  - days: [sat]\n    from: "22:00"\n    to: "02:00"\n'
    )
    (people_of(stick) / "biden" / "person.yaml").write_text("disabled: true\n")
    sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    gallery = Gallery.load(tmp_path / "gallery")

    monday_noon = datetime.datetime(2026, 12, 7, 12, 0)
    monday_night = datetime.datetime(2026, 12, 7, 19, 0)
    sunday_one = datetime.datetime(2026, 12, 13, 1, 0)
    sunday_three = datetime.datetime(2026, 12, 13, 3, 0)
    obama = gallery.options_of("obama")
    assert obama.access_allowed(monday_noon) == (True, "")
    assert obama.access_allowed(monday_night) == (False, "schedule")
    assert obama.access_allowed(sunday_one) == (True, "")
    assert obama.access_allowed(sunday_three) == (False, "schedule")
    assert gallery.options_of("biden").access_allowed(monday_noon) == (False, "disabled")
    assert gallery.options_of("rose_leslie").access_allowed(sunday_three) == (True, "")


def test_bad_person_yaml_keeps_person_as_before(tmp_path, stick, pipeline):
    gallery = tmp_path / "gallery"
    (people_of(stick) / "biden" / "person.yaml").write_text("disabled: true\n")
    sync_stick(stick, gallery, pipeline, RULES)

    # A broken file, together with a photo change that must not be half-applied.
    (people_of(stick) / "biden" / "person.yaml").write_text('disabled: false\nschedule: [{days: [mon], from: 7:30, to: "18:00"}]\n')
    (people_of(stick) / "biden" / "biden2.jpg").unlink()
    (people_of(stick) / "Newcomer").mkdir()
    shutil.copy(lfw_photo("Aaron_Eckhart"), people_of(stick) / "Newcomer" / "1.jpg")
    (people_of(stick) / "Newcomer" / "person.yaml").write_text("disabled: maybe\n")

    report = sync_stick(stick, gallery, pipeline, RULES)
    biden = report.result.person("biden")
    assert biden.action == "kept"
    assert "must be quoted" in biden.options_error
    assert report.result.person("Newcomer").action == "not enrolled"
    assert "disabled must be true or false" in report.result.person("Newcomer").options_error
    assert report.status == "partial"

    loaded = Gallery.load(gallery)
    assert loaded.options_of("biden").disabled
    assert set(loaded.photos["biden"]) == {"biden.jpg", "biden2.jpg"}
    assert "Newcomer" not in loaded.people


def test_photos_kept_only_when_asked(tmp_path, stick, pipeline):
    gallery = tmp_path / "gallery"
    sync_stick(stick, gallery, pipeline, RULES)
    assert not (gallery / PHOTOS_FOLDER).exists()

    keep = EnrolmentRules(match_threshold=1.05, keep_photos=True)
    sync_stick(stick, gallery, pipeline, keep)
    loaded = Gallery.load(gallery)
    record = loaded.photos["obama"]["obama.jpg"]
    assert (gallery / PHOTOS_FOLDER / record.sha256).read_bytes() == (KNN / "train" / "obama" / "obama.jpg").read_bytes()
    assert len(list((gallery / PHOTOS_FOLDER).iterdir())) == 9

    sync_stick(stick, gallery, pipeline, RULES)
    assert not (gallery / PHOTOS_FOLDER).exists()


def test_file_and_pixel_limits(tmp_path, stick, pipeline):
    folder = people_of(stick) / "obama"
    (folder / "huge.jpg").write_bytes(os.urandom(600_000))
    write_rgb(folder / "wide.png", np.full((1000, 1200, 3), 100, dtype=np.uint8))
    rules = EnrolmentRules(match_threshold=1.05, max_file_bytes=500_000, max_pixels=1_100_000)
    files = files_of(sync_stick(stick, tmp_path / "gallery", pipeline, rules))
    assert files["obama/huge.jpg"][0] == "skipped"
    assert "over the limit of 0.476837 MB" in files["obama/huge.jpg"][1]
    assert files["obama/wide.png"][0] == "skipped"
    assert "1200x1000 = 1200000 pixels, over the limit" in files["obama/wide.png"][1]
    assert files["obama/obama.jpg"] == ("enrolled", "")


def write_config(tmp_path, settings, **enrolment):
    lines = [
        "detector:",
        "  backend: yunet",
        f"  yunet_model: {settings['detector.yunet_model']}",
        "embedder:",
        f"  model: {settings['embedder.model']}",
        "matching:",
        "  threshold: 1.05",
        "gallery:",
        f"  path: {tmp_path / 'gallery'}",
        "events:",
        f"  database: {tmp_path / 'events.db'}",
    ]
    if enrolment:
        lines.append("enrolment:")
        lines.extend(f"  {key}: {value}" for key, value in enrolment.items())
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_sync_reads_source_and_gallery_from_config(tmp_path, stick, settings, capsys):
    config = write_config(tmp_path, settings, source=str(stick))
    assert main(["sync", "--config", str(config)]) == 0
    output = capsys.readouterr().out
    assert "result:   gallery updated: 5 people enrolled (5 added)" in output
    assert Gallery.load(tmp_path / "gallery").people == ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]

    (people_of(stick) / "obama" / "zero.jpg").write_bytes(b"")
    assert main(["sync", "--config", str(config), "--json"]) == 1
    assert '"status": "partial"' in capsys.readouterr().out

    # With a config file, each report is also a sync event for the door's log and MQTT.
    from edgeface.events import EventLog

    events = EventLog(tmp_path / "events.db")
    statuses = [event.data["status"] for event in events.recent(10, kind="sync")]
    events.close()
    assert sorted(statuses) == ["ok", "partial"]


def test_cli_sync_without_source_exits_2(tmp_path, settings, capsys):
    config = write_config(tmp_path, settings)
    assert main(["sync", "--config", str(config)]) == 2
    assert "no source folder" in capsys.readouterr().err


def test_cli_enroll_flat_folder_still_works(tmp_path, settings, capsys):
    config = write_config(tmp_path, settings)
    status = main(["enroll", str(require(KNN / "train")), "--gallery", str(tmp_path / "g"), "--config", str(config)])
    assert status == 0
    assert "obama: added, 2 photos used (2 embedded)" in capsys.readouterr().out
    assert len(Gallery.load(tmp_path / "g")) == 9


SYNC_LOOP = """
import sys
from edgeface.config import load_config
from edgeface.enrolment import EnrolmentRules
from edgeface.pipeline import Pipeline
from edgeface.sync import sync_stick

yunet, model, stick_a, stick_b, gallery = sys.argv[1:]
pipeline = Pipeline.from_config(load_config(None, {
    "detector.backend": "yunet", "detector.yunet_model": yunet, "embedder.model": model}))
rules = EnrolmentRules(match_threshold=1.05)
print("ready", flush=True)
while True:
    sync_stick(stick_b, gallery, pipeline, rules)
    sync_stick(stick_a, gallery, pipeline, rules)
"""


def gallery_state(folder):
    gallery = Gallery.load(folder)
    photos = {person: {name: p.sha256 for name, p in records.items()} for person, records in gallery.photos.items()}
    vectors = {(person, name): gallery.vector_of(person, name) for person in gallery.photos for name in gallery.photos[person]}
    return photos, vectors


def test_killed_sync_leaves_old_or_new_gallery(tmp_path, pipeline, settings):
    # Two sticks: A with Obama and Biden, B with Alex Lacamoire as well. A
    # process syncs B and A in turn, so each sync embeds or removes one
    # person and saves, and is killed at random moments; the gallery must
    # then load and equal the state after A or after B.
    stick_a = tmp_path / "a"
    stick_b = tmp_path / "b"
    for person in ("obama", "biden"):
        shutil.copytree(KNN / "train" / person, people_of(stick_a) / person)
        shutil.copytree(KNN / "train" / person, people_of(stick_b) / person)
    shutil.copytree(KNN / "train" / "alex_lacamoire", people_of(stick_b) / "alex_lacamoire")

    gallery = tmp_path / "gallery"
    sync_stick(stick_b, gallery, pipeline, RULES)
    state_b = gallery_state(gallery)
    sync_stick(stick_a, gallery, pipeline, RULES)
    state_a = gallery_state(gallery)
    assert state_a[0] != state_b[0]

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = ["nice", "-n", "10", sys.executable, "-c", SYNC_LOOP, str(require(YUNET)), settings["embedder.model"],
               str(stick_a), str(stick_b), str(gallery)]
    rng = np.random.default_rng(8)
    seen = []
    for attempt in range(20):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 2.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()

        photos, vectors = gallery_state(gallery)
        expected = state_a if photos == state_a[0] else state_b
        assert photos == expected[0], f"attempt {attempt}: the gallery is neither the old nor the new state"
        for key, vector in vectors.items():
            np.testing.assert_allclose(vector, expected[1][key], atol=1e-5)
        seen.append("a" if expected is state_a else "b")

        report = (stick_a / "edgeface" / REPORT_FILE).read_text()
        assert report.startswith("edgeface enrolment report\n")
        assert report.endswith("\n")
    print("states after each kill:", "".join(seen))


# person.yaml parsing and schedules, without models.


@pytest.mark.parametrize(
    "text, message",
    [
        ("disabled: yes please\n", "disabled must be true or false"),
        ("colour: blue\n", "unknown option colour"),
        ("schedule: weekdays\n", "schedule must be a list"),
        ('schedule: [{days: [mon], from: "07:30"}]\n', "missing to"),
        ('schedule: [{days: [funday], from: "07:30", to: "18:00"}]\n', "unknown day 'funday'"),
        ('schedule: [{days: [], from: "07:30", to: "18:00"}]\n', "days must be a list"),
        ('schedule: [{days: [mon], from: "7.30", to: "18:00"}]\n', 'must be a time as "HH:MM"'),
        ('schedule: [{days: [mon], from: "07:30", to: "25:00"}]\n', 'from "00:00" to "24:00"'),
        ("schedule: [{days: [mon], from: 07:30, to: 18:00}]\n", "must be quoted"),
        ('schedule: [{days: [mon], from: "08:00", to: "08:00"}]\n', "both 08:00"),
        ('schedule: [{days: [mon], from: "24:00", to: "08:00"}]\n', "end of a day"),
        ("schedule: [\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_invalid_person_yaml_rejected(text, message):
    with pytest.raises(PersonOptionsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_options(text)


def test_empty_person_yaml_is_default():
    assert parse_options("") == PersonOptions()
    assert parse_options("# nothing yet\n").is_default


def test_schedule_window_past_midnight():
    options = parse_options('schedule:\n  - days: [Friday]\n    from: "22:00"\n    to: "02:00"\n')
    friday = datetime.datetime(2026, 12, 11, 23, 59)
    assert options.access_allowed(friday) == (True, "")
    assert options.access_allowed(friday.replace(hour=21)) == (False, "schedule")
    saturday = datetime.datetime(2026, 12, 12, 1, 59)
    assert options.access_allowed(saturday) == (True, "")
    assert options.access_allowed(saturday.replace(hour=2, minute=0)) == (False, "schedule")
    # Friday's early hours belong to Thursday's window, which does not exist.
    assert options.access_allowed(friday.replace(hour=1)) == (False, "schedule")


def test_whole_day_window_and_disabled_wins():
    options = parse_options('disabled: true\nschedule: [{days: [sun], from: "00:00", to: "24:00"}]\n')
    sunday = datetime.datetime(2026, 12, 13, 23, 59)
    assert options.access_allowed(sunday) == (False, "disabled")
    enabled = PersonOptions(disabled=False, schedule=options.schedule)
    assert enabled.access_allowed(sunday) == (True, "")
    assert PersonOptions.from_dict(enabled.as_dict()) == enabled


def test_unreadable_folder_keeps_person_as_before(tmp_path, stick, pipeline, monkeypatch):
    gallery = tmp_path / "gallery"
    sync_stick(stick, gallery, pipeline, RULES)
    before = Gallery.load(gallery)

    # The stick fails while obama's folder is listed (as when it is pulled out).
    failing = people_of(stick) / "obama"
    listing = Path.iterdir

    def iterdir(self):
        if self == failing:
            raise OSError(errno.EIO, "Input/output error")
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    report = sync_stick(stick, gallery, pipeline, RULES)
    obama = report.result.person("obama")
    assert obama.action == "kept"
    assert obama.error == "the folder cannot be read: Input/output error"
    assert report.status == "partial"
    assert "obama: kept as before (2 photos), because the folder cannot be read: Input/output error" in report.as_text()
    after = Gallery.load(gallery)
    np.testing.assert_array_equal(after.vector_of("obama", "obama.jpg"), before.vector_of("obama", "obama.jpg"))


def test_model_change_embeds_every_photo_again(tmp_path, stick, pipeline, yunet_model):
    from edgeface.registration import register_model

    gallery = tmp_path / "gallery"
    sync_stick(stick, gallery, pipeline, RULES)

    # The same network registered with another normalisation is another model.
    other_model = tmp_path / "model" / "other.onnx"
    other_model.parent.mkdir()
    shutil.copy(require(MOBILEFACENET), other_model)
    register_model(other_model, preset_name="arcface112", std=[127.5, 127.5, 127.5])
    other = Pipeline.from_config(
        load_config(None, {"detector.backend": "yunet", "detector.yunet_model": str(yunet_model), "embedder.model": str(other_model)})
    )
    assert other.fingerprint != pipeline.fingerprint
    for photo in (people_of(stick) / "alex_lacamoire").iterdir():
        photo.write_bytes(b"")

    report = sync_stick(stick, gallery, other, RULES)
    actions = {person.person: (person.action, person.used, person.embedded) for person in report.result.people}
    assert actions["obama"] == ("changed", 2, 2)
    assert actions["alex_lacamoire"] == ("removed", 0, 0)
    loaded = Gallery.load(gallery)
    assert loaded.fingerprint == other.fingerprint
    assert "alex_lacamoire" not in loaded.people


def test_cli_sync_of_wrong_stick_exits_2(tmp_path, settings, capsys):
    config = write_config(tmp_path, settings)
    other = tmp_path / "holiday-photos"
    other.mkdir()
    assert main(["sync", str(other), "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "error: no edgeface/people/ folder in" in captured.err
    assert "result:   FAILED, the gallery was not changed" in captured.out
    assert not (tmp_path / "gallery" / GALLERY_FILE).exists()


def test_unusable_folder_names_reported(tmp_path, stick, pipeline):
    people = people_of(stick)
    os.mkdir(os.fsencode(people) + b"/Ren\xe9")
    (people / "tab\there").mkdir()
    persian = "\u0645\u06cc\u200c\u0631\u0648\u0632"  # a name with a zero-width non-joiner
    (people / persian).mkdir()
    shutil.copy(lfw_photo("Adam_Sandler"), people / persian / "1.jpg")

    report = sync_stick(stick, tmp_path / "gallery", pipeline, RULES)
    files = files_of(report)
    assert files["Ren\\xe9"] == ("skipped", "the folder name is not valid UTF-8: rename the folder on a computer")
    assert files["tab\there"] == ("skipped", "the folder name contains control characters: rename the folder")
    assert report.result.person(persian).action == "added"
    assert persian in Gallery.load(tmp_path / "gallery").people
    assert "Ren\\xe9: skipped" in (stick / "edgeface" / REPORT_FILE).read_text(encoding="utf-8")
