"""``edgeface mqtt check`` and ``edgeface mqtt sign-unlock``: MQTT setup and remote unlock from the command line."""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import ssl
import sys
import threading
from pathlib import Path

from .config import load_config
from .errors import ConfigError
from .mqtt import make_client, read_password
from .remote_commands import REQUESTER_MAX_CHARS, load_secret, sign_unlock


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``edgeface mqtt check`` and ``edgeface mqtt sign-unlock`` to the command line."""
    mqtt = subparsers.add_parser("mqtt", help="check the MQTT settings, sign remote unlock commands")
    commands = mqtt.add_subparsers(dest="mqtt_command", required=True)

    check = commands.add_parser(
        "check",
        help="connect to the broker with the mqtt settings and report what fails",
        description="Connect to the MQTT broker with the settings of --config, then disconnect. "
        "Exit status 0 when the broker accepted the connection, 1 when it failed, 2 for invalid settings. "
        "Nothing is published.",
    )
    check.add_argument("--config", type=Path, help="config file (default: the built-in defaults)")
    check.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker (default: 10)")
    check.set_defaults(handler=_check_command)

    sign = commands.add_parser(
        "sign-unlock",
        help="print a signed unlock command for edgeface/<device_id>/command/unlock",
        description="Print a signed unlock command (JSON) on stdout, valid for mqtt.command_max_age seconds. "
        "Send it with: mosquitto_pub -t edgeface/<device_id>/command/unlock -q 1 -m \"$(edgeface mqtt sign-unlock ...)\"",
    )
    sign.add_argument("--config", type=Path, help="config file; gives mqtt.device_id and mqtt.command_secret_file")
    sign.add_argument("--secret-file", type=Path, help="shared secret file (default: mqtt.command_secret_file)")
    sign.add_argument("--device-id", help="door to unlock (default: mqtt.device_id)")
    sign.add_argument("--by", default="", help=f"requester name, up to {REQUESTER_MAX_CHARS} characters, shown in the event log")
    sign.set_defaults(handler=_sign_unlock_command)


def _check_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)["mqtt"]
    password = read_password(settings)
    if settings["remote_unlock"]:
        load_secret(settings["command_secret_file"])
    if not settings["enabled"]:
        print("warning: mqtt.enabled is false, so the daemon will not connect; checking the settings anyway",
              file=sys.stderr)

    host, port = settings["host"], settings["port"]
    error = _try_connect(settings, password, args.timeout)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 1

    user = settings["username"] or "anonymous"
    transport = "TLS" if settings["tls"] else "plain TCP"
    print(f"connected to {host}:{port} as {user} over {transport}; topics are under edgeface/{settings['device_id']}/")
    return 0


def _try_connect(settings: dict, password: str | None, timeout: float) -> str | None:
    """Connect once; return None on success or a message saying what failed and what to check."""
    host, port = settings["host"], settings["port"]
    # Its own client id, so that the check does not disconnect a running daemon.
    client = make_client(settings, f"edgeface-{settings['device_id']}-check-{secrets.token_hex(4)}", password)
    answered = threading.Event()
    outcome = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome["reason"] = reason_code
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=max(5, int(timeout)))
    except ssl.SSLError as error:
        return (f"TLS handshake with {host}:{port} failed: {error}; check mqtt.ca_certs and that the broker's "
                f"certificate is issued for {host}")
    except socket.gaierror as error:
        return f"host name {host!r} not found ({error.strerror}); check mqtt.host"
    except ConnectionRefusedError:
        return (f"{host}:{port} refused the connection; check that the broker is running and that mqtt.port is "
                "right (usually 1883, or 8883 with TLS)")
    except OSError as error:
        return f"cannot connect to {host}:{port}: {error}; check mqtt.host, mqtt.port and the network"

    client.loop_start()
    try:
        if not answered.wait(timeout):
            return (f"{host}:{port} accepted the TCP connection but sent no MQTT answer within {timeout:g} s; "
                    "check mqtt.tls (a TLS port does not answer plain MQTT)")
        reason = outcome["reason"]
        if reason.is_failure:
            return f"the broker rejected the connection: {reason}; check mqtt.username and the password"
        return None
    finally:
        client.disconnect()
        client.loop_stop()


def _sign_unlock_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)["mqtt"]
    device_id = args.device_id or config["device_id"]
    if not device_id or any(c in device_id for c in "/+#") or not device_id.isprintable():
        raise ConfigError(f"--device-id {device_id!r} must be a non-empty name without '/', '+' or '#'")
    secret_file = args.secret_file or config["command_secret_file"]
    if secret_file is None:
        raise ConfigError("no secret: pass --secret-file FILE or set mqtt.command_secret_file in --config")
    if len(args.by) > REQUESTER_MAX_CHARS or not args.by.isprintable():
        raise ConfigError(f"--by must be at most {REQUESTER_MAX_CHARS} printable characters")
    command = sign_unlock(load_secret(secret_file), device_id, requester=args.by)
    print(json.dumps(command))
    return 0
