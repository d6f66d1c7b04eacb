"""edgeface doctor: each check's OK and FAIL, with real components.

GPIO uses gpiozero's MockFactory and a folder of fake gpiochip nodes, the
Raspberry Pi camera a fake ``picamera2`` module, OpenCV sources real files,
and MQTT a mosquitto broker started on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgeface import cli, detection
from edgeface.doctor import Hardware, run_checks
from edgeface.gallery import Gallery
from edgeface.manifest import Manifest, OutputSpec, preset, save_manifest, sha256_file

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def write_model(folder: Path, trained: bool = True) -> Path:
    """Write a model file and its manifest; the doctor hashes the file but never runs it."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "face.onnx"
    model.write_bytes(b"stands in for ONNX bytes: the doctor only hashes them")
    spec, crop = preset("dlib150")
    manifest = Manifest(
        name="face",
        model_file=model.name,
        sha256=sha256_file(model),
        input=spec,
        crop=crop,
        output=OutputSpec(name="embedding", dim=4),
        trained=trained,
    )
    save_manifest(manifest, folder / "face.json")
    return model


def write_gallery(folder: Path, manifest: Manifest, people: int = 2) -> None:
    gallery = Gallery(model_name=manifest.name, fingerprint=manifest.fingerprint(), dim=4)
    rng = np.random.default_rng(0)
    for index in range(people):
        vector = rng.normal(size=4).astype(np.float32)
        gallery.replace_person(f"person{index}", {"a.jpg": ("0" * 64, vector / np.linalg.norm(vector))})
    gallery.save(folder)


_DETECTORS: dict[str, object] = {}


def make_detector_once(settings: dict):
    """Create each detector configuration once per test session; dlib's takes about a second."""
    key = repr(sorted(settings.items()))
    if key not in _DETECTORS:
        _DETECTORS[key] = _REAL_MAKE_DETECTOR(settings)
    return _DETECTORS[key]


_REAL_MAKE_DETECTOR = detection.make_detector


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    """A working installation in tmp_path: config, model, gallery, state folder, camera, GPIO."""
    monkeypatch.setattr(detection, "make_detector", make_detector_once)
    model = write_model(tmp_path / "models")
    from edgeface.manifest import load_manifest

    write_gallery(tmp_path / "state" / "gallery", load_manifest(model))
    config = {
        "embedder": {"model": str(model)},
        "gallery": {"path": str(tmp_path / "state" / "gallery")},
        "events": {"database": str(tmp_path / "state" / "events.db")},
        "door": {"relay_pin": 17},
    }
    devices = tmp_path / "dev"
    devices.mkdir()
    (devices / "gpiochip0").touch(mode=0o660)

    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    hardware = Hardware(pin_factory=factory, device_dir=devices, user="root", min_free_bytes=1)
    install_fake_picamera2(monkeypatch, [{"Model": "imx708", "Num": 0}])
    yield types.SimpleNamespace(root=tmp_path, config=config, hardware=hardware, factory=factory, model=model)
    factory.close()


def install_fake_picamera2(monkeypatch, cameras: list[dict]) -> None:
    class Picamera2:
        @staticmethod
        def global_camera_info():
            return cameras

    module = types.ModuleType("picamera2")
    module.Picamera2 = Picamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)


def check(setup, **changes):
    """Write the config with ``changes`` ({"section.key": value}) and run every check."""
    config = {section: dict(values) for section, values in setup.config.items()}
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        config.setdefault(section, {})[key] = value
    path = setup.root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_checks(path, setup.hardware)


def results_named(report, name):
    return [result for result in report.results if result.name == name]


def only(report, name):
    results = results_named(report, name)
    assert len(results) == 1, results
    return results[0]


# --- whole report ------------------------------------------------------------


def test_doctor_passes_working_setup(setup):
    report = check(setup)

    assert [r.name for r in report.results if not r.ok] == []
    assert {r.name for r in report.results} == {"config", "model", "detector", "gallery", "camera", "gpio", "mqtt", "disk"}
    assert report.exit_status() == 0
    assert "2 people, 2 photos" in only(report, "gallery").message
    assert "imx708" in only(report, "camera").message


def test_doctor_invalid_config_exits_2(setup):
    report = check(setup, **{"matching.treshold": 0.5})

    assert report.exit_status() == 2
    assert len(report.results) == 1
    assert "unknown setting matching.treshold" in report.results[0].message
    assert "edit" in report.results[0].fix


def test_doctor_missing_config_names_install(tmp_path):
    report = run_checks(tmp_path / "absent.yaml")

    assert report.exit_status() == 2
    assert "install.sh" in report.results[0].fix


def test_cli_prints_fix_and_exit_status(setup, capsys):
    setup.model.write_bytes(b"changed after the manifest was written")
    config = dict(setup.config, door={"simulate": True})
    path = setup.root / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    status = cli.main(["doctor", "--config", str(path)])

    output = capsys.readouterr().out
    assert status == 1
    assert "FAIL  model" in output
    assert "fix: run systemd/install.sh again" in output
    assert "OK    gpio      door.simulate is true" in output
    assert "checks failed" in output


# --- model, detector, gallery ------------------------------------------------


def test_model_with_changed_bytes_fails(setup):
    setup.model.write_bytes(b"changed after the manifest was written")

    result = only(check(setup), "model")

    assert not result.ok
    assert "sha256" in result.message


def test_missing_model_fails(setup):
    result = only(check(setup, **{"embedder.model": str(setup.root / "none.onnx")}), "model")

    assert not result.ok
    assert "not found" in result.message


def test_untrained_model_fails(setup):
    model = write_model(setup.root / "untrained", trained=False)

    result = only(check(setup, **{"embedder.model": str(model)}), "model")

    assert not result.ok
    assert "random weights" in result.message


def test_missing_yunet_model_fails(setup):
    report = check(setup, **{"detector.backend": "yunet", "detector.yunet_model": str(setup.root / "yunet.onnx")})

    result = only(report, "detector")
    assert not result.ok
    assert "YuNet model not found" in result.message
    assert "OpenCV model zoo" in result.fix


def test_yunet_detector_loads(setup, yunet_model):
    result = only(check(setup, **{"detector.backend": "yunet", "detector.yunet_model": str(yunet_model)}), "detector")

    assert result.ok, result.message
    assert "YuNet loads" in result.message


def test_missing_gallery_fails_with_enrol_fix(setup):
    result = only(check(setup, **{"gallery.path": str(setup.root / "state" / "other")}), "gallery")

    assert not result.ok
    assert "EDGEFACE" in result.fix


def test_gallery_of_other_model_fails(setup):
    other = write_model(setup.root / "other-model")
    (other).write_bytes(b"a different model")
    from edgeface.manifest import load_manifest

    manifest = load_manifest(other, verify_hash=False)
    manifest.sha256 = sha256_file(other)
    save_manifest(manifest, other.with_suffix(".json"))

    result = only(check(setup, **{"embedder.model": str(other)}), "gallery")

    assert not result.ok
    assert "fingerprint" in result.message


def test_people_within_threshold_of_each_other_fail(setup):
    # The two people of the test gallery lie well within 1.4 of each other.
    result = only(check(setup, **{"matching.threshold": 1.4}), "gallery")

    assert not result.ok
    assert "person0 and person1" in result.message
    assert "lower matching.threshold" in result.fix


def test_empty_gallery_fails(setup):
    from edgeface.manifest import load_manifest

    write_gallery(setup.root / "empty", load_manifest(setup.model), people=0)

    result = only(check(setup, **{"gallery.path": str(setup.root / "empty")}), "gallery")

    assert not result.ok
    assert "nobody enrolled" in result.message


# --- camera ------------------------------------------------------------------


def test_picamera2_without_cameras_fails(setup, monkeypatch):
    install_fake_picamera2(monkeypatch, [])

    result = only(check(setup), "camera")

    assert not result.ok
    assert "lists no camera" in result.message
    assert "rpicam-hello --list-cameras" in result.fix


def test_picamera2_missing_fails_with_apt_fix(setup, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)

    result = only(check(setup), "camera")

    assert not result.ok
    assert "apt install python3-picamera2" in result.fix


def test_picamera2_numpy_mismatch_names_constraints(setup, monkeypatch, tmp_path):
    # The error apt's simplejpeg raises at import when the venv has numpy 2.
    package = tmp_path / "site" / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")\n'
    )
    monkeypatch.delitem(sys.modules, "picamera2")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    result = only(check(setup), "camera")

    assert not result.ok
    assert "numpy.dtype size changed" in result.message
    assert "constraints.txt" in result.fix


def test_video_file_source_reads_frame(setup):
    video = setup.root / "door.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for value in range(3):
        writer.write(np.full((48, 64, 3), value * 60, dtype=np.uint8))
    writer.release()

    result = only(check(setup, **{"camera.source": str(video)}), "camera")

    assert result.ok, result.message
    assert "64x48" in result.message


@pytest.mark.parametrize("content", [b"", b"not a video"])
def test_unreadable_video_fails(setup, content):
    video = setup.root / "broken.avi"
    video.write_bytes(content)

    result = only(check(setup, **{"camera.source": str(video)}), "camera")

    assert not result.ok


def test_missing_camera_source_fails(setup):
    result = only(check(setup, **{"camera.source": str(setup.root / "none.mp4")}), "camera")

    assert not result.ok
    assert "not found" in result.message


def test_image_folder_source(setup):
    folder = setup.root / "frames"
    folder.mkdir()
    assert not only(check(setup, **{"camera.source": str(folder)}), "camera").ok

    cv2.imwrite(str(folder / "0001.jpg"), np.zeros((8, 8, 3), dtype=np.uint8))
    result = only(check(setup, **{"camera.source": str(folder)}), "camera")
    assert result.ok
    assert "1 images" in result.message


# --- GPIO --------------------------------------------------------------------


@pytest.mark.parametrize("active_high", [True, False])
def test_relay_pin_claimed_without_energising(setup, active_high):
    report = check(setup, **{"door.active_high": active_high})

    assert all(r.ok for r in results_named(report, "gpio"))
    pin = setup.factory.pin(17)
    # states[0] is the mock pin's level before anyone drove it; the mock
    # records a state only when the level changes.
    driven = [state.state for state in pin.states[1:]]
    assert active_high not in driven
    assert pin.states[-1].state is (not active_high)
    assert pin.function == "input"


def test_relay_pin_in_use_fails(setup):
    from gpiozero import OutputDevice

    holder = OutputDevice(17, pin_factory=setup.factory)
    try:
        results = results_named(check(setup), "gpio")
    finally:
        holder.close()

    failed = [r for r in results if not r.ok]
    assert len(failed) == 1
    assert "in use" in failed[0].message
    assert "systemctl stop edgeface" in failed[0].fix


def test_invalid_relay_pin_fails(setup):
    failed = [r for r in results_named(check(setup, **{"door.relay_pin": "GPIO99"}), "gpio") if not r.ok]

    assert len(failed) == 1
    assert "not a GPIO pin" in failed[0].message


def test_contact_and_button_pins_checked(setup):
    results = results_named(check(setup, **{"door.contact_pin": 22, "door.exit_button_pin": 27}), "gpio")

    assert [r.ok for r in results] == [True, True, True, True]
    assert any("contact pin 22" in r.message for r in results)
    assert any("button pin 27" in r.message for r in results)


def test_no_gpiochip_fails(setup):
    (setup.hardware.device_dir / "gpiochip0").unlink()

    failed = [r for r in results_named(check(setup), "gpio") if not r.ok]

    assert len(failed) == 1
    assert "no gpiochip device" in failed[0].message
    assert "door.simulate" in failed[0].fix


def test_gpiochip_without_permission_fails(setup):
    chip = setup.hardware.device_dir / "gpiochip0"
    chip.chmod(0o660)
    setup.hardware.user = "nobody"

    failed = [r for r in results_named(check(setup), "gpio") if not r.ok]

    assert len(failed) == 1
    assert "user nobody cannot open" in failed[0].message
    assert "usermod -aG gpio nobody" in failed[0].fix


def test_gpiochip_world_access_passes(setup):
    (setup.hardware.device_dir / "gpiochip0").chmod(0o666)
    setup.hardware.user = "nobody"

    assert all(r.ok for r in results_named(check(setup), "gpio"))


def test_simulated_door_skips_gpio(setup):
    results = results_named(check(setup, **{"door.simulate": True}), "gpio")

    assert len(results) == 1
    assert results[0].ok
    assert setup.factory.pins == {}


def test_simulated_door_still_checks_pin_names(setup):
    results = results_named(check(setup, **{"door.simulate": True, "door.relay_pin": "GPIO99"}), "gpio")

    assert len(results) == 1
    assert not results[0].ok
    assert "GPIO99" in results[0].message
    assert setup.factory.pins == {}  # the real pins were not touched


# --- MQTT --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def broker(tmp_path):
    """Start mosquitto on a free loopback port; users 'door' with password 'secret'."""
    if not Path(MOSQUITTO).exists():
        pytest.skip(f"mosquitto not installed at {MOSQUITTO} (Debian package mosquitto)")

    def start(with_password: bool):
        port = free_port()
        lines = [f"listener {port} 127.0.0.1", "user root" if _is_root() else ""]
        if with_password:
            passwords = tmp_path / "passwords"
            subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(passwords), "door", "secret"], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        conf = tmp_path / f"mosquitto-{port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        processes.append(process)
        _wait_for_port(port, process)
        return port

    processes: list[subprocess.Popen] = []
    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _is_root() -> bool:
    return os.geteuid() == 0


def _wait_for_port(port: int, process: subprocess.Popen) -> None:
    # Polls until the broker listens; the bound is generous and only guards
    # against a broker that never starts.
    for _ in range(200):
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited: {process.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"mosquitto did not listen on port {port}")


def test_mqtt_disabled_not_checked(setup):
    result = only(check(setup), "mqtt")

    assert result.ok
    assert "not checked" in result.message


def test_mqtt_broker_accepts(setup, broker):
    port = broker(with_password=False)

    result = only(check(setup, **{"mqtt.enabled": True, "mqtt.host": "127.0.0.1", "mqtt.port": port}), "mqtt")

    assert result.ok, result.message
    assert f"127.0.0.1:{port} accepted" in result.message


def test_mqtt_closed_port_fails(setup):
    port = free_port()

    result = only(check(setup, **{"mqtt.enabled": True, "mqtt.host": "127.0.0.1", "mqtt.port": port}), "mqtt")

    assert not result.ok
    assert "cannot connect" in result.message
    assert "mqtt.host" in result.fix


def test_mqtt_wrong_password_refused(setup, broker):
    port = broker(with_password=True)
    settings = {"mqtt.enabled": True, "mqtt.host": "127.0.0.1", "mqtt.port": port, "mqtt.username": "door"}

    result = only(check(setup, **settings, **{"mqtt.password": "wrong"}), "mqtt")

    assert not result.ok
    assert "refused" in result.message
    assert "mqtt.username" in result.fix


def test_mqtt_password_file_accepted(setup, broker):
    port = broker(with_password=True)
    password_file = setup.root / "mqtt-password"
    password_file.write_text("secret\n")
    settings = {"mqtt.enabled": True, "mqtt.host": "127.0.0.1", "mqtt.port": port, "mqtt.username": "door"}

    result = only(check(setup, **settings, **{"mqtt.password_file": str(password_file)}), "mqtt")

    assert result.ok, result.message


def test_mqtt_missing_password_file_fails(setup):
    settings = {"mqtt.enabled": True, "mqtt.port": free_port(), "mqtt.username": "door"}

    result = only(check(setup, **settings, **{"mqtt.password_file": str(setup.root / "absent")}), "mqtt")

    assert not result.ok
    assert "cannot read mqtt.password_file" in result.message


# --- disk --------------------------------------------------------------------


def test_low_disk_space_fails(setup):
    setup.hardware.min_free_bytes = 2**62

    result = only(check(setup), "disk")

    assert not result.ok
    assert "MiB free" in result.message
    assert "journalctl --vacuum-size" in result.fix


def test_missing_state_folder_fails(setup):
    result = [r for r in results_named(check(setup, **{"events.database": str(setup.root / "gone" / "events.db")}), "disk")]

    assert [r.ok for r in result] == [True, False]
    assert "state folder" in result[1].message
    assert "install -d" in result[1].fix
