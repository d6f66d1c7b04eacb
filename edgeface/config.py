"""Configuration: defaults, ``config.yaml`` and command-line overrides, validated at load.

Every setting has a default here (the documented copy is ``config.yaml`` at
the top of the repository). A config file only needs the settings it changes.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError`
naming the key, so a typo never silently falls back to a default.

Relative paths in a config file are resolved against the file's folder;
relative paths in defaults and on the command line against the working
directory.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """One setting: its type, default, allowed range and whether it is a path."""

    kind: type | tuple[type, ...]
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    path: bool = False
    optional: bool = False


SCHEMA: dict[str, dict[str, Setting]] = {
    "detector": {
        "backend": Setting(str, "dlib", choices=("yunet", "dlib")),
        "yunet_model": Setting(str, "models/face_detection_yunet_2023mar.onnx", path=True),
        "score_threshold": Setting(float, 0.7, 0.0, 1.0),
        "nms_threshold": Setting(float, 0.3, 0.0, 1.0),
        "max_side": Setting(int, 1280, 64, 8192),
        "upsample": Setting(int, 1, 0, 3),
        "dlib_score_threshold": Setting(float, 0.0, -2.0, 3.0),
        "min_face_size": Setting(int, 40, 0, 4096),
    },
    "embedder": {
        "model": Setting(str, "models/dlib_resnet_v1.onnx", path=True),
        "threads": Setting(int, None, 1, 64, optional=True),
        "allow_untrained": Setting(bool, False),
    },
    "matching": {
        "k1": Setting(int, 3, 1, 50),
        "k2": Setting(int, 5, 2, 100),
        "threshold": Setting(float, 0.34, None, 1.4),
        "min_votes": Setting(int, 1, 1, 50),
        "margin": Setting(float, 0.0, 0.0, 1.0),
    },
    "enrolment": {
        "dominant_face_ratio": Setting(float, 2.0, 1.0, 100.0),
        "source": Setting(str, None, path=True, optional=True),
        "max_file_mb": Setting(float, 30.0, 0.1, 1000.0),
        "max_pixels": Setting(int, 50_000_000, 10_000, 89_478_485),
        "min_eye_distance": Setting(float, 25.0, 0.0, 4096.0),
        "min_sharpness": Setting(float, 12.0, 0.0, 100000.0),
        "keep_photos": Setting(bool, False),
    },
    "gallery": {
        "path": Setting(str, "gallery", path=True),
    },
    "camera": {
        "source": Setting(str, "picamera2"),
        "width": Setting(int, 640, 64, 8192),
        "height": Setting(int, 480, 64, 8192),
        "max_fps": Setting(float, 8.0, 0.1, 120.0),
        "realtime": Setting(bool, True),
        "read_timeout": Setting(float, 2.0, 0.1, 60.0),
        "open_timeout": Setting(float, 10.0, 0.5, 300.0),
        "frozen_seconds": Setting(float, 10.0, 1.0, 3600.0),
        "reconnect_max_seconds": Setting(float, 30.0, 1.0, 3600.0),
    },
    "decision": {
        "min_frames": Setting(int, 3, 1, 100),
        "window_frames": Setting(int, 5, 1, 100),
        "window_seconds": Setting(float, 2.0, 0.1, 60.0),
        "max_faces": Setting(int, 1, 1, 50),
        "min_eye_distance": Setting(float, 20.0, 0.0, 4096.0),
        "min_sharpness": Setting(float, 20.0, 0.0, 100000.0),
        "track_iou": Setting(float, 0.3, 0.0, 1.0),
        "track_timeout": Setting(float, 1.5, 0.1, 60.0),
    },
    "door": {
        "relay_pin": Setting((int, str), 17),
        "active_high": Setting(bool, True),
        "unlock_seconds": Setting(float, 3.0, 0.1, 60.0),
        "cooldown_seconds": Setting(float, 5.0, 0.0, 3600.0),
        "contact_pin": Setting((int, str), None, optional=True),
        "held_open_seconds": Setting(float, 30.0, 1.0, 3600.0),
        "exit_button_pin": Setting((int, str), None, optional=True),
        "simulate": Setting(bool, False),
    },
    "events": {
        "database": Setting(str, "events.db", path=True),
        "max_events": Setting(int, 100000, 100, 100000000),
        "thumbnails": Setting(bool, False),
    },
    "mqtt": {
        "enabled": Setting(bool, False),
        "host": Setting(str, "localhost"),
        "port": Setting(int, 1883, 1, 65535),
        "tls": Setting(bool, False),
        "ca_certs": Setting(str, None, path=True, optional=True),
        "username": Setting(str, None, optional=True),
        "password": Setting(str, None, optional=True),
        "password_file": Setting(str, None, path=True, optional=True),
        "device_id": Setting(str, "edgeface"),
        "discovery_prefix": Setting(str, "homeassistant"),
        "health_interval": Setting(float, 60.0, 1.0, 86400.0),
        "outbox_max": Setting(int, 10000, 10, 10000000),
        "remote_unlock": Setting(bool, False),
        "command_secret_file": Setting(str, None, path=True, optional=True),
        "command_max_age": Setting(float, 30.0, 1.0, 3600.0),
    },
}


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def defaults() -> dict[str, dict[str, Any]]:
    """Return a fresh copy of every setting's default value."""
    return {section: {key: copy.copy(s.default) for key, s in keys.items()} for section, keys in SCHEMA.items()}


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Return the validated configuration.

    :param path: a YAML file; ``None`` uses the defaults alone.
    :param overrides: ``{"section.key": value}`` from the command line, applied
        after the file; a ``None`` value leaves the setting as it is.
    """
    config = defaults()
    _resolve_paths(config, Path.cwd())

    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
        except UnicodeDecodeError as error:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from error
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
        _merge(config, data or {}, str(path), path.resolve().parent)

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        _merge(config, {section: {key: value}}, "command line", Path.cwd())

    _check_relations(config)
    return config


def _merge(config: dict, data: Any, where: str, base: Path) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections, not {type(data).__name__}")
    for section, values in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{where}: unknown section {section!r}; known sections: {', '.join(SCHEMA)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of settings")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                known = ", ".join(SCHEMA[section])
                raise ConfigError(f"{where}: unknown setting {section}.{key}; settings of {section}: {known}")
            setting = SCHEMA[section][key]
            value = _check_value(f"{section}.{key}", setting, value, where)
            if setting.path and value is not None:
                value = str((base / Path(value).expanduser()).resolve())
            if section == "camera" and key == "source":
                value = _resolve_camera_source(value, base)
            config[section][key] = value


def _check_value(name: str, setting: Setting, value: Any, where: str) -> Any:
    if value is None:
        if setting.optional:
            return None
        raise ConfigError(f"{where}: {name} must be set, it has no empty value")
    if setting.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (isinstance(value, bool) and setting.kind is not bool) or not isinstance(value, setting.kind):
        kinds = setting.kind if isinstance(setting.kind, tuple) else (setting.kind,)
        expected = " or ".join(_KIND_NAMES[kind] for kind in kinds)
        raise ConfigError(f"{where}: {name} must be {expected}, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a finite number, not {value!r}")
    if setting.choices is not None and value not in setting.choices:
        raise ConfigError(f"{where}: {name} must be one of {', '.join(map(str, setting.choices))}, not {value!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{where}: {name} is {value}, below its minimum {setting.minimum}")
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(f"{where}: {name} is {value}, above its maximum {setting.maximum}")
    return value


def _check_relations(config: dict) -> None:
    matching = config["matching"]
    if matching["k2"] <= matching["k1"]:
        raise ConfigError(f"matching.k2 ({matching['k2']}) must be greater than matching.k1 ({matching['k1']})")
    if matching["threshold"] <= 0:
        raise ConfigError(f"matching.threshold is {matching['threshold']}, but must be greater than 0 (and at most 1.4)")
    decision = config["decision"]
    if decision["min_frames"] > decision["window_frames"]:
        raise ConfigError(
            f"decision.min_frames ({decision['min_frames']}) must not exceed decision.window_frames ({decision['window_frames']})"
        )
    # A grant needs min_frames processed frames inside window_seconds, and a
    # track must survive the gap between two processed frames.
    frame_gap = 1.0 / config["camera"]["max_fps"]
    needed = (decision["min_frames"] - 1) * frame_gap
    if needed > decision["window_seconds"]:
        raise ConfigError(
            f"decision.window_seconds ({decision['window_seconds']}) is shorter than the {needed:.2f} s that "
            f"decision.min_frames ({decision['min_frames']}) frames take at camera.max_fps ({config['camera']['max_fps']}), "
            "so nobody could ever be let in: raise window_seconds or max_fps, or lower min_frames"
        )
    if decision["track_timeout"] < 2 * frame_gap:
        raise ConfigError(
            f"decision.track_timeout ({decision['track_timeout']}) must be at least two frame intervals "
            f"({2 * frame_gap:.2f} s at camera.max_fps {config['camera']['max_fps']}), or every frame starts a new track "
            "and nobody is let in"
        )
    device_id = config["mqtt"]["device_id"]
    if not device_id or any(c in device_id for c in "/+#") or not device_id.isprintable():
        raise ConfigError(f"mqtt.device_id {device_id!r} must be a non-empty name without '/', '+' or '#'")


def _resolve_camera_source(source: str, base: Path) -> str:
    """Resolve a camera source that is a file or folder path against ``base``.

    ``picamera2``, device numbers and URLs are returned unchanged. The same
    rules pick the source type in :mod:`edgeface.camera`.
    """
    if source == "picamera2" or re.fullmatch(r"[0-9]+", source) or "://" in source:
        return source
    return str((base / Path(source).expanduser()).resolve())


def _resolve_paths(config: dict, base: Path) -> None:
    for section, keys in SCHEMA.items():
        for key, setting in keys.items():
            value = config[section][key]
            if setting.path and value is not None:
                config[section][key] = str((base / Path(value).expanduser()).resolve())
