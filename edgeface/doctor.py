"""``edgeface doctor``: check that this machine can run the door service.

The doctor loads the config and then checks the embedding model against
its manifest's sha256, the face detector, the gallery and the camera. It
also checks GPIO access to the door pins, the MQTT broker (when enabled)
and the free disk space at the state folders. Each check prints one line,
and every FAIL line is followed by the fix.

The checks stay cheap: models are hashed and the detector is created, but
nothing is inferred. The camera is listed (picamera2) or opened for one
frame (OpenCV), and the relay pin is claimed as an output with the relay
off and released again. The relay is never energised.

Hardware is reached through :class:`Hardware`, so tests pass gpiozero's
``MockFactory``, a folder of fake device nodes and a fake ``picamera2``
module in ``sys.modules``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import warnings
import pwd
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import load_config
from .errors import ConfigError, DetectorError, GalleryError, ModelError, ModelMismatchError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/edgeface/config.yaml")
# Saving the gallery writes a full second copy before the rename, and the
# event log grows to events.max_events rows. 200 MiB is an estimate that
# leaves room for both with the default settings and thumbnails off.
MIN_FREE_BYTES = 200 * 1024 * 1024
MQTT_TIMEOUT_SECONDS = 5.0
CAMERA_OPEN_TIMEOUT_MS = 5000


@dataclass
class CheckResult:
    """The outcome of one check: OK or FAIL, what was found, and the fix for a FAIL."""

    name: str
    ok: bool
    message: str
    fix: str = ""

    def format(self) -> str:
        """Return the printed lines: ``OK``/``FAIL``, the check's name, the message, then the fix."""
        line = f"{'OK' if self.ok else 'FAIL':<5} {self.name:<9} {self.message}"
        if not self.ok and self.fix:
            line += f"\n{'':16}fix: {self.fix}"
        return line


def ok(name: str, message: str) -> CheckResult:
    return CheckResult(name, True, message)


def fail(name: str, message: str, fix: str) -> CheckResult:
    return CheckResult(name, False, message, fix)


@dataclass
class Hardware:
    """The GPIO backend, device folder, user and limits that the checks use.

    :param pin_factory: a gpiozero pin factory; ``None`` uses gpiozero's
        default (lgpio on Raspberry Pi OS Bookworm).
    :param device_dir: the folder holding ``gpiochip*`` nodes, ``/dev``.
    :param user: the user whose permissions on the device nodes are
        checked; ``None`` checks the user running the doctor.
    :param min_free_bytes: FAIL when a state folder's file system has less
        free space than this.
    :param mqtt_timeout: seconds to wait for the broker's TCP connection
        and for its CONNACK.
    """

    pin_factory: Any = None
    device_dir: Path = Path("/dev")
    user: str | None = None
    min_free_bytes: int = MIN_FREE_BYTES
    mqtt_timeout: float = MQTT_TIMEOUT_SECONDS


@dataclass
class Report:
    """All check results, and whether the config itself loaded."""

    results: list[CheckResult] = field(default_factory=list)
    config_loaded: bool = True

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if not result.ok]

    def exit_status(self) -> int:
        """Return 2 when the config is invalid, 1 when a check failed, else 0."""
        if not self.config_loaded:
            return 2
        return 1 if self.failures else 0


def run_checks(config_path: str | os.PathLike[str], hardware: Hardware | None = None) -> Report:
    """Run every check against the config at ``config_path`` and return the report.

    When the config does not load, the report holds only that failure,
    because every other check reads the config.
    """
    hardware = hardware or Hardware()
    report = Report()
    try:
        config = load_config(config_path)
    except ConfigError as error:
        report.config_loaded = False
        if Path(config_path).exists():
            fix = f"edit {config_path}; config.yaml in the repository lists every setting with its default"
        else:
            fix = "pass --config FILE, or run sudo systemd/install.sh, which writes /etc/edgeface/config.yaml"
        report.results.append(fail("config", str(error), fix))
        return report
    report.results.append(ok("config", f"{config_path} loads"))

    model_result, manifest = check_model(config)
    report.results.append(model_result)
    report.results.append(check_detector(config))
    report.results.append(check_gallery(config, manifest))
    report.results.append(check_camera(config))
    report.results.extend(check_gpio(config, hardware))
    report.results.append(check_mqtt(config, hardware))
    report.results.extend(check_disk(config, hardware))
    return report


# --- model, detector, gallery ------------------------------------------------


def check_model(config: dict) -> tuple[CheckResult, Any]:
    """Check that the embedding model exists and matches its manifest's sha256.

    Returns the result and the manifest (``None`` on failure), which the
    gallery check needs for the model fingerprint.
    """
    from .manifest import load_manifest

    model = config["embedder"]["model"]
    fix = (
        "run systemd/install.sh again to export the default model, or "
        "'python -m export dlib-resnet --out DIR' and set embedder.model to DIR/dlib_resnet_v1.onnx"
    )
    try:
        manifest = load_manifest(model)
    except ModelError as error:
        return fail("model", str(error), fix), None
    if not manifest.trained and not config["embedder"]["allow_untrained"]:
        return (
            fail(
                "model",
                f"model {manifest.name} ({manifest.model_path}) has random weights and recognises nobody",
                "export the real weights (python -m export dlib-resnet) and point embedder.model at them",
            ),
            None,
        )
    return ok("model", f"{manifest.model_path} ({manifest.name}) matches the sha256 in its manifest"), manifest


def check_detector(config: dict) -> CheckResult:
    """Create the configured face detector, which loads its model files."""
    from .detection import make_detector

    settings = config["detector"]
    backend = settings["backend"]
    if backend == "yunet":
        fix = (
            "download face_detection_yunet_2023mar.onnx from the OpenCV model zoo into /opt/edgeface/models "
            "and set detector.yunet_model to it, or set detector.backend: dlib"
        )
    else:
        fix = "install the dlib extra in the venv: /opt/edgeface/venv/bin/pip install 'edgeface[dlib]' (install.sh does this)"
    try:
        make_detector(settings)
    except DetectorError as error:
        return fail("detector", str(error), fix)
    if backend == "yunet":
        return ok("detector", f"YuNet loads from {settings['yunet_model']}")
    return ok("detector", "dlib's HOG detector and 5-point landmark model load")


def check_gallery(config: dict, manifest: Any) -> CheckResult:
    """Load the gallery and check that it was built with the configured model."""
    from .gallery import Gallery

    folder = config["gallery"]["path"]
    enrol_fix = (
        "enrol people: plug in a USB stick labelled EDGEFACE with photos in edgeface/people/<Name>/, or run "
        f"sudo -u edgeface edgeface enroll PEOPLE_DIR --gallery {folder} --config CONFIG"
    )
    try:
        gallery = Gallery.load(folder)
    except GalleryError as error:
        return fail("gallery", str(error), enrol_fix)
    if manifest is not None:
        try:
            gallery.check_model(manifest.name, manifest.fingerprint())
        except ModelMismatchError as error:
            return fail("gallery", str(error), "enrol everyone again with the configured model (edgeface enroll or the USB stick)")
    people = gallery.people
    if not people:
        return fail("gallery", f"the gallery at {folder} has nobody enrolled, so the door never opens", enrol_fix)
    closest = gallery.closest_people()
    threshold = config["matching"]["threshold"]
    if closest is not None and closest[2] <= threshold:
        first, second, distance = closest
        return fail(
            "gallery",
            f"{first} and {second} have photos {distance:.3f} apart, within matching.threshold {threshold}, "
            "so a face between them can match either (a threshold too loose for the model, a photo in the wrong "
            "folder, or twins)",
            f"check the photos of {first} and {second}, or lower matching.threshold below {distance:.2f}",
        )
    checked = "" if manifest is not None else " (model not checked: the model check failed)"
    return ok("gallery", f"{folder}: {len(people)} people, {len(gallery)} photos, model {gallery.model_name}{checked}")


# --- camera ------------------------------------------------------------------


def check_camera(config: dict) -> CheckResult:
    """Check that the configured camera source can deliver frames.

    ``picamera2`` is imported and must list at least one camera. The camera
    itself is not opened, so the check does not disturb a running daemon. Other sources are opened with OpenCV and one frame is read; a
    folder of images must hold at least one image.
    """
    source = config["camera"]["source"]
    if source == "picamera2":
        return _check_picamera2()

    if "://" not in source and not source.isdigit():
        path = Path(source)
        if not path.exists():
            return fail("camera", f"camera.source {source} not found", "set camera.source to picamera2, a device number such as 0, a stream URL, a video file or a folder of images")
        if path.is_dir():
            from .imageio import is_image_file

            images = [p for p in path.iterdir() if is_image_file(p)]
            if not images:
                return fail("camera", f"camera.source folder {source} holds no images", "copy .jpg or .png frames into it, or set camera.source to a camera")
            return ok("camera", f"folder {source} holds {len(images)} images")
    return _check_opencv_source(source)


def _check_picamera2() -> CheckResult:
    try:
        module = importlib.import_module("picamera2")
        cameras = module.Picamera2.global_camera_info()
    except ImportError as error:
        return fail(
            "camera",
            f"picamera2 does not import: {error}",
            "sudo apt install python3-picamera2, and keep the venv made with --system-site-packages (install.sh does both)",
        )
    except ValueError as error:
        # apt's simplejpeg raises "numpy.dtype size changed" under numpy 2.
        return fail(
            "camera",
            f"picamera2 does not import: {error}",
            "the venv has a numpy that apt's picamera2 cannot use: reinstall with systemd/constraints.txt (numpy 1.24)",
        )
    except RuntimeError as error:
        return fail("camera", f"libcamera failed to list cameras: {error}", "reboot, then run rpicam-hello --list-cameras")
    if not cameras:
        return fail(
            "camera",
            "picamera2 lists no camera",
            "check the ribbon cable (contacts towards the board on a Pi 4), connect it with the power off, "
            "then run rpicam-hello --list-cameras",
        )
    models = ", ".join(str(camera.get("Model", "unknown")) for camera in cameras)
    return ok("camera", f"picamera2 lists {len(cameras)} camera{'s' if len(cameras) != 1 else ''}: {models}")


def _check_opencv_source(source: str) -> CheckResult:
    import cv2

    target: int | str = int(source) if source.isdigit() else source
    params = []
    for name, value in (("CAP_PROP_OPEN_TIMEOUT_MSEC", CAMERA_OPEN_TIMEOUT_MS), ("CAP_PROP_READ_TIMEOUT_MSEC", CAMERA_OPEN_TIMEOUT_MS)):
        if hasattr(cv2, name):
            params += [getattr(cv2, name), value]
    capture = cv2.VideoCapture(target, cv2.CAP_ANY, params)
    try:
        if not capture.isOpened():
            return fail("camera", f"OpenCV cannot open camera.source {source}", _opencv_fix(source))
        has_frame, frame = capture.read()
        if not has_frame or frame is None:
            return fail("camera", f"OpenCV opened camera.source {source} but read no frame", _opencv_fix(source))
        height, width = frame.shape[:2]
        return ok("camera", f"OpenCV reads {width}x{height} frames from {source}")
    finally:
        capture.release()


def _opencv_fix(source: str) -> str:
    if source.isdigit():
        return (
            f"check that /dev/video{source} exists (ls /dev/video*), that the user is in the video group, "
            "and that no other program (such as a running edgeface.service) holds the camera"
        )
    if "://" in source:
        return "check the URL, the network and the camera's credentials, for example with ffprobe URL"
    return "check that the file is a video OpenCV can read (mp4 or avi)"


# --- GPIO --------------------------------------------------------------------


def check_gpio(config: dict, hardware: Hardware) -> list[CheckResult]:
    """Check the GPIO device nodes and that the door pins can be claimed.

    The relay pin is claimed as an output whose initial value is off, then
    released. The optional contact and exit-button pins are claimed as
    inputs with the pull-up they use.
    """
    door = config["door"]
    if door["simulate"]:
        # No GPIO is used, but the pin names must still be valid, as edgeface run checks them.
        from gpiozero.pins.mock import MockFactory

        simulated = Hardware(pin_factory=MockFactory())
        results = [_claim_pin("relay", door["relay_pin"], simulated,
                              lambda pin, factory: _output_device(pin, door["active_high"], factory))]
        for key, label in (("contact_pin", "contact"), ("exit_button_pin", "button")):
            if door[key] is not None:
                results.append(_claim_pin(label, door[key], simulated, _input_device))
        failures = [r for r in results if not r.ok]
        return failures or [ok("gpio", "door.simulate is true: the relay is simulated and no GPIO is used")]

    results = [_check_gpio_nodes(hardware)]
    results.append(
        _claim_pin(
            "relay",
            door["relay_pin"],
            hardware,
            lambda pin, factory: _output_device(pin, door["active_high"], factory),
        )
    )
    for key, label in (("contact_pin", "contact"), ("exit_button_pin", "button")):
        if door[key] is not None:
            results.append(_claim_pin(label, door[key], hardware, _input_device))
    return results


def _output_device(pin: Any, active_high: bool, factory: Any) -> Any:
    from gpiozero import OutputDevice

    return OutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=factory)


def _input_device(pin: Any, factory: Any) -> Any:
    from gpiozero import DigitalInputDevice

    return DigitalInputDevice(pin, pull_up=True, pin_factory=factory)


def _check_gpio_nodes(hardware: Hardware) -> CheckResult:
    chips = sorted(hardware.device_dir.glob("gpiochip*"))
    if not chips:
        return fail(
            "gpio",
            f"no gpiochip device in {hardware.device_dir}",
            "run edgeface on a Raspberry Pi, or set door.simulate: true to try it without a relay",
        )
    user = hardware.user or pwd.getpwuid(os.geteuid()).pw_name
    denied = [chip for chip in chips if not _can_read_write(chip, user)]
    if denied:
        names = ", ".join(str(chip) for chip in denied)
        return fail("gpio", f"user {user} cannot open {names}", f"sudo usermod -aG gpio {user}, then restart the service or log in again")
    return ok("gpio", f"user {user} can open {', '.join(str(chip) for chip in chips)}")


def _can_read_write(path: Path, user: str) -> bool:
    """Return whether ``user`` may open ``path`` for reading and writing, by its mode bits.

    NOTE: POSIX ACLs are not read, because Raspberry Pi OS grants GPIO
    access by the gpio group alone.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return False
    if entry.pw_uid == 0:
        return True
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == entry.pw_uid:
        return mode & 0o600 == 0o600
    groups = set(os.getgrouplist(user, entry.pw_gid))
    if info.st_gid in groups:
        return mode & 0o060 == 0o060
    return mode & 0o006 == 0o006


def _claim_pin(label: str, pin: Any, hardware: Hardware, make: Callable[[Any, Any], Any]) -> CheckResult:
    from gpiozero.exc import GPIOPinInUse, PinFactoryFallback, PinInvalidPin

    name = f"{label} pin {pin}"
    try:
        # gpiozero warns once per pin library it cannot load before it settles
        # on one; the check reports the outcome, so the warnings are noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PinFactoryFallback)
            device = make(pin, hardware.pin_factory)
    except PinInvalidPin as error:
        return fail("gpio", f"{name} is not a GPIO pin: {error}", "use a BCM number such as 17 or a name such as GPIO17 in the door section")
    except GPIOPinInUse as error:
        return fail("gpio", f"{name} is in use: {error}", "stop the program that holds it; for edgeface itself: sudo systemctl stop edgeface")
    except Exception as error:  # pin factories raise their own library's error types
        log.debug("claiming %s failed", name, exc_info=True)
        return fail(
            "gpio",
            f"cannot claim {name}: {type(error).__name__}: {error}",
            "on a Pi 5 install python3-lgpio (sudo apt install python3-lgpio) and keep the venv's system site packages",
        )
    device.close()
    return ok("gpio", f"{name} can be claimed{' with the relay off' if label == 'relay' else ''}")


# --- MQTT --------------------------------------------------------------------


def check_mqtt(config: dict, hardware: Hardware) -> CheckResult:
    """Connect to the configured broker and wait for its CONNACK, when MQTT is enabled."""
    settings = config["mqtt"]
    if not settings["enabled"]:
        return ok("mqtt", "mqtt.enabled is false: not checked")

    import paho.mqtt.client as mqtt

    address = f"{settings['host']}:{settings['port']}"
    password = settings["password"]
    if settings["password_file"] is not None:
        try:
            password = Path(settings["password_file"]).read_text(encoding="utf-8").strip()
        except OSError as error:
            return fail(
                "mqtt",
                f"cannot read mqtt.password_file {settings['password_file']}: {error.strerror}",
                "create the file with the broker password, readable by the user edgeface (chmod 640, group edgeface)",
            )

    # A client id of its own, so that the check never takes over the
    # running daemon's session.
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"{settings['device_id']}-doctor-{os.getpid()}")
    client.connect_timeout = hardware.mqtt_timeout
    if settings["username"] is not None:
        client.username_pw_set(settings["username"], password)
    if settings["tls"]:
        client.tls_set(ca_certs=settings["ca_certs"])

    answers: list[Any] = []
    client.on_connect = lambda _client, _userdata, _flags, reason_code, _properties: answers.append(reason_code)
    network_fix = f"start the broker, or correct mqtt.host and mqtt.port; test with: mosquitto_sub -h {settings['host']} -p {settings['port']} -t '#' -C 1"
    try:
        client.connect(settings["host"], settings["port"], keepalive=10)
        deadline = time.monotonic() + hardware.mqtt_timeout
        while not answers and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except OSError as error:
        return fail("mqtt", f"cannot connect to the broker at {address}: {error}", network_fix)
    finally:
        client.disconnect()
        # One more loop sends the DISCONNECT and closes the socket.
        try:
            client.loop(timeout=0.1)
        except OSError:
            pass

    if not answers:
        return fail("mqtt", f"the broker at {address} sent no CONNACK within {hardware.mqtt_timeout:g} s", network_fix + "; check mqtt.tls")
    if answers[0].is_failure:
        return fail(
            "mqtt",
            f"the broker at {address} refused the connection: {answers[0]}",
            "check mqtt.username and mqtt.password (or mqtt.password_file) against the broker's users",
        )
    return ok("mqtt", f"the broker at {address} accepted the connection")


# --- disk --------------------------------------------------------------------


def check_disk(config: dict, hardware: Hardware) -> list[CheckResult]:
    """Check that each state folder exists, is writable and has free space."""
    folders = [Path(config["gallery"]["path"]).parent, Path(config["events"]["database"]).parent]
    results = []
    for folder in dict.fromkeys(folders):
        if not folder.is_dir():
            results.append(
                fail("disk", f"state folder {folder} not found", f"sudo install -d -o edgeface -g edgeface -m 750 {folder} (install.sh creates it)")
            )
            continue
        if not os.access(folder, os.W_OK):
            results.append(fail("disk", f"state folder {folder} is not writable by this user", f"sudo chown -R edgeface:edgeface {folder}"))
            continue
        free = shutil.disk_usage(folder).free
        if free < hardware.min_free_bytes:
            results.append(
                fail(
                    "disk",
                    f"only {free // 2**20} MiB free at {folder}; edgeface needs at least {hardware.min_free_bytes // 2**20} MiB",
                    "free space: sudo apt clean; sudo journalctl --vacuum-size=100M; or lower events.max_events",
                )
            )
            continue
        results.append(ok("disk", f"{free // 2**20} MiB free at {folder}"))
    return results


# --- command line ------------------------------------------------------------


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``edgeface doctor`` to the CLI's sub-commands."""
    doctor = commands.add_parser(
        "doctor",
        help="check the config, models, gallery, camera, GPIO, MQTT and disk space, and print a fix for each failure",
    )
    doctor.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"YAML config file of the service (default: {DEFAULT_CONFIG})",
    )
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    report = run_checks(args.config)
    for result in report.results:
        print(result.format())
    failures = len(report.failures)
    if failures:
        print(f"{failures} of {len(report.results)} checks failed")
    else:
        print(f"all {len(report.results)} checks passed")
    return report.exit_status()
