"""systemd/install.sh, uninstall.sh and the units, run against a temporary root.

install.sh runs in its test mode (``--root DIR --no-system --skip-pip``),
which writes every file under DIR and prints the apt-get, useradd, chown,
udevadm and systemctl commands instead of running them. Nothing here
changes the machine the tests run on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgeface.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "systemd"
INSTALL = SYSTEMD / "install.sh"
UNINSTALL = SYSTEMD / "uninstall.sh"
UNITS = ("edgeface.service", "edgeface-sync.service", "media-edgeface.mount")
STATE_PATHS = {
    ("detector", "yunet_model"): "/opt/edgeface/models/face_detection_yunet_2023mar.onnx",
    ("embedder", "model"): "/opt/edgeface/models/dlib_resnet_v1.onnx",
    ("gallery", "path"): "/var/lib/edgeface/gallery",
    ("events", "database"): "/var/lib/edgeface/events.db",
    ("enrolment", "source"): "/media/edgeface",
}


@pytest.fixture()
def models(tmp_path) -> Path:
    """A folder with one model and its manifest; install.sh only copies them."""
    folder = tmp_path / "models-source"
    folder.mkdir()
    (folder / "dlib_resnet_v1.onnx").write_bytes(b"model bytes")
    (folder / "dlib_resnet_v1.json").write_text('{"sha256": "not checked by the copy"}\n')
    (folder / "no_manifest.onnx").write_bytes(b"skipped: no manifest beside it")
    return folder


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=300)


def install(root: Path, models: Path) -> subprocess.CompletedProcess:
    result = run_script(
        INSTALL, "--root", str(root), "--no-system", "--skip-pip", "--python", sys.executable, "--models", str(models)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree(root: Path) -> dict[str, str]:
    """Map every path under ``root`` to its type, mode and content hash (or link target)."""
    listing = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        info = path.lstat()
        mode = oct(stat.S_IMODE(info.st_mode))
        if path.is_symlink():
            listing[relative] = f"link {os.readlink(path)}"
        elif path.is_dir():
            listing[relative] = f"dir {mode}"
        else:
            listing[relative] = f"file {mode} {hashlib.sha256(path.read_bytes()).hexdigest()}"
    return listing


def test_install_twice_gives_same_tree(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    install(root, models)
    first = tree(root)

    second_run = install(root, models)
    assert tree(root) == first
    assert "wrote" not in second_run.stdout


def test_install_keeps_edited_config(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    install(root, models)
    first = tree(root)
    config = root / "etc/edgeface/config.yaml"
    edited = config.read_text().replace("  threshold: 0.34\n", "  threshold: 0.30\n") + "# edited by hand\n"
    assert edited != config.read_text() + "# edited by hand\n"
    config.write_text(edited)

    result = install(root, models)

    assert config.read_text() == edited
    assert "kept your /etc/edgeface/config.yaml" in result.stdout
    after = tree(root)
    changed = {path for path in first if after.get(path) != first[path]}
    assert changed == {"etc/edgeface/config.yaml"}
    assert set(after) == set(first)


def test_installed_config_sets_service_paths(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    install(root, models)

    installed = load_config(root / "etc/edgeface/config.yaml")
    shipped = load_config(ROOT / "config.yaml")
    for (section, key), expected in STATE_PATHS.items():
        assert installed[section][key] == expected
    for section, values in shipped.items():
        for key, value in values.items():
            if (section, key) not in STATE_PATHS:
                assert installed[section][key] == value, f"{section}.{key}"
    assert (root / "etc/edgeface/config.yaml.default").read_bytes() == (root / "etc/edgeface/config.yaml").read_bytes()


def test_install_writes_files_and_prints_system_commands(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    result = install(root, models)

    for unit in UNITS:
        assert (root / "etc/systemd/system" / unit).read_bytes() == (SYSTEMD / unit).read_bytes()
    assert (root / "etc/udev/rules.d/90-edgeface-usb.rules").is_file()
    assert (root / "opt/edgeface/models/dlib_resnet_v1.onnx").read_bytes() == b"model bytes"
    assert not (root / "opt/edgeface/models/no_manifest.onnx").exists()
    assert "no_manifest.onnx: its manifest no_manifest.json is missing" in result.stderr
    assert (root / "opt/edgeface/venv/pyvenv.cfg").read_text().count("include-system-site-packages = true") == 1
    assert os.readlink(root / "usr/local/bin/edgeface") == "/opt/edgeface/venv/bin/edgeface"
    assert stat.S_IMODE((root / "var/lib/edgeface").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "etc/edgeface/config.yaml").stat().st_mode) == 0o640
    for command in ("apt-get install", "python3-picamera2", "python3-lgpio", "useradd --system", "usermod --append --groups gpio,video edgeface", "systemctl start edgeface.service"):
        assert command in result.stdout, command
    assert "constraints.txt" in result.stdout


def test_install_exports_model_unless_it_matches(tmp_path):
    root = tmp_path / "root"
    models = root / "opt/edgeface/models"
    models.mkdir(parents=True)
    model = models / "dlib_resnet_v1.onnx"
    model.write_bytes(b"exported earlier")
    manifest = models / "dlib_resnet_v1.json"
    manifest.write_text(json.dumps({"sha256": hashlib.sha256(b"exported earlier").hexdigest()}))
    command = ["--root", str(root), "--no-system", "--skip-pip", "--python", sys.executable]

    matching = run_script(INSTALL, *command)
    model.write_bytes(b"changed since the export")
    changed = run_script(INSTALL, *command)

    assert matching.returncode == 0, matching.stderr
    assert "dlib_resnet_v1.onnx is in place and matches its manifest" in matching.stdout
    assert "-m export dlib-resnet" not in matching.stdout
    assert changed.returncode == 0, changed.stderr
    assert f"skipped (--skip-pip): {root}/opt/edgeface/venv/bin/python -m export dlib-resnet --out {models}" in changed.stdout


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl not installed (Debian package systemd)")
def test_install_enables_service_in_root(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    install(root, models)

    link = root / "etc/systemd/system/multi-user.target.wants/edgeface.service"
    assert os.readlink(link) == "/etc/systemd/system/edgeface.service"


def test_uninstall_keeps_gallery_unless_purged(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    install(root, models)
    gallery = root / "var/lib/edgeface/gallery/gallery.npz"
    gallery.write_bytes(b"enrolled people")

    result = run_script(UNINSTALL, "--root", str(root), "--no-system")
    assert result.returncode == 0, result.stderr
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
    assert files == ["etc/edgeface/config.yaml", "var/lib/edgeface/gallery/gallery.npz"]
    assert "skipped (--no-system): systemctl disable --now edgeface.service" in result.stdout

    result = run_script(UNINSTALL, "--root", str(root), "--no-system", "--purge")
    assert result.returncode == 0, result.stderr
    assert [p for p in root.rglob("*") if not p.is_dir()] == []
    assert "userdel edgeface" in result.stdout


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        (INSTALL, ["--root", "/tmp"], "--root needs --no-system"),
        (INSTALL, ["--no-system"], "--no-system needs --root"),
        (INSTALL, ["--root", "/", "--no-system"], "--root / is the real system"),
        (INSTALL, ["--bogus"], "unknown option --bogus"),
        (INSTALL, ["--root", "/nonexistent-edgeface-root", "--no-system"], "does not exist"),
        (UNINSTALL, ["--root", "/tmp"], "--root needs --no-system"),
        (UNINSTALL, ["--no-system"], "--no-system needs --root"),
    ],
)
def test_scripts_reject_unsafe_options(script, args, message):
    result = run_script(script, *args)

    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("script", [INSTALL, UNINSTALL])
def test_real_mode_requires_root_user(script):
    command = ["bash", str(script)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to run the script as an ordinary user")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert "run as root, for example: sudo" in result.stderr


# --- the units ---------------------------------------------------------------


def unit_settings(name: str) -> dict[str, list[str]]:
    """Return every ``Key=value`` of a unit file, as lists because keys may repeat."""
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_door_unit_runs_notify_daemon_with_watchdog():
    unit = unit_settings("edgeface.service")

    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == ["/opt/edgeface/venv/bin/edgeface run --config /etc/edgeface/config.yaml"]
    assert unit["Restart"] == ["always"]
    assert unit["WatchdogSec"] == ["30s"]
    assert "StartLimitBurst" in unit
    assert "StartLimitIntervalSec" in unit
    assert unit["User"] == ["edgeface"]
    assert unit["SupplementaryGroups"] == ["gpio video"]
    assert unit["StateDirectory"] == ["edgeface"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["/var/lib/edgeface"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_door_unit_leaves_devices_reachable():
    unit = unit_settings("edgeface.service")

    # Each of these can make systemd deny /dev/gpiochip* and /dev/video*.
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert key not in unit, key


def test_sync_unit_mounts_stick_read_only():
    sync = unit_settings("edgeface-sync.service")
    mount = unit_settings("media-edgeface.mount")

    assert sync["Type"] == ["oneshot"]
    assert sync["SuccessExitStatus"] == ["1"]
    assert sync["BindsTo"] == ["media-edgeface.mount"]
    assert sync["ExecStart"][0].endswith(f"sync --config /etc/edgeface/config.yaml {mount['Where'][0]}")
    assert "ro" in mount["Options"][0].split(",")
    assert mount["What"] == ["/dev/disk/by-label/EDGEFACE"]
    assert any("try-reload-or-restart edgeface.service" in line for line in sync["ExecStartPost"])


RULE_MATCH = re.compile(r'^(?P<key>[A-Z_]+)(\{(?P<attr>[A-Za-z_]+)\})?(?P<op>==|!=|\+=|=)"(?P<value>[^"]*)"$')


def udev_rule_result(properties: dict[str, str]) -> dict[str, str] | None:
    """Evaluate the single rule of 90-edgeface-usb.rules on a device's properties.

    Returns the ``ENV`` and ``TAG`` assignments when every match key agrees,
    else ``None``. Only the operators the rule uses are supported.
    """
    lines = [
        line
        for line in (SYSTEMD / "90-edgeface-usb.rules").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == 1
    assigned = {}
    for part in (p.strip() for p in lines[0].split(",")):
        match = RULE_MATCH.match(part)
        assert match, f"unparsed rule part {part!r}"
        name = match["attr"] if match["key"] == "ENV" else match["key"]
        if match["op"] == "==":
            if properties.get(name) != match["value"]:
                return None
        elif match["op"] == "!=":
            if properties.get(name) == match["value"]:
                return None
        else:
            assigned[name] = match["value"]
    return assigned


def test_udev_rule_starts_sync_for_labelled_stick():
    device = {"ACTION": "add", "SUBSYSTEM": "block", "ID_FS_USAGE": "filesystem", "ID_FS_LABEL": "EDGEFACE"}

    assigned = udev_rule_result(device)

    assert assigned == {"TAG": "systemd", "SYSTEMD_WANTS": "edgeface-sync.service"}
    assert (SYSTEMD / assigned["SYSTEMD_WANTS"]).is_file()
    assert udev_rule_result({**device, "ID_FS_LABEL": "BACKUP"}) is None
    assert udev_rule_result({**device, "ACTION": "remove"}) is None
    assert udev_rule_result({**device, "ID_FS_USAGE": "raid"}) is None


# --- systemd-analyze verify --------------------------------------------------


def verify_units(unit_dir: Path, work: Path, opt_prefix: Path) -> subprocess.CompletedProcess:
    """Run ``systemd-analyze verify`` on copies of the units whose /opt/edgeface is under ``opt_prefix``.

    systemd-analyze checks that every Exec path exists and is executable, so
    the copies point at the temporary root's venv; the unit file names (which
    must match Where= for mount units) stay the same.
    """
    work.mkdir()
    names = []
    for unit in UNITS:
        text = (unit_dir / unit).read_text().replace("/opt/edgeface/", f"{opt_prefix}/opt/edgeface/")
        (work / unit).write_text(text)
        names.append(str(work / unit))
    return subprocess.run(["systemd-analyze", "verify", *names], capture_output=True, text=True, timeout=120, cwd=work)


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (Debian package systemd)"
)


def write_console_script(root: Path) -> None:
    """Write the ``edgeface`` launcher that pip writes, because the test skips pip."""
    script = root / "opt/edgeface/venv/bin/edgeface"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom edgeface.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)


@needs_systemd_analyze
def test_installed_units_pass_systemd_analyze_verify(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    install(root, models)
    write_console_script(root)

    result = verify_units(root / "etc/systemd/system", tmp_path / "verify", root)

    # Unknown keys and bad values are warnings with exit status 0, so any
    # output counts as a failure.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


@needs_systemd_analyze
def test_systemd_analyze_verify_reports_bad_unit(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    install(root, models)
    write_console_script(root)
    service = root / "etc/systemd/system/edgeface.service"
    service.write_text(service.read_text().replace("Type=notify", "Type=notfy"))

    result = verify_units(root / "etc/systemd/system", tmp_path / "verify", root)

    assert "Failed to parse service type" in result.stderr


@needs_systemd_analyze
def test_systemd_analyze_verify_reports_missing_executable(tmp_path, models):
    root = tmp_path / "root"
    root.mkdir()
    install(root, models)

    result = verify_units(root / "etc/systemd/system", tmp_path / "verify", root)

    assert result.returncode != 0
    assert "venv/bin/edgeface is not executable" in result.stderr
