"""Signed unlock commands: signing, checking, replay protection and the sign-unlock command."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from edgeface.cli import main
from edgeface.events import EventLog
from edgeface.remote_commands import UnlockVerifier, sign_unlock

SECRET = b"0123456789abcdef0123456789abcdef"
MAX_AGE = 30.0


@pytest.fixture
def events(tmp_path):
    log = EventLog(tmp_path / "events.db")
    yield log
    log.close()


def payload(command: dict) -> bytes:
    return json.dumps(command).encode()


def test_valid_command_accepted_once(events):
    verifier = UnlockVerifier(SECRET, "front", MAX_AGE, events)
    command = payload(sign_unlock(SECRET, "front", requester="ana's phone"))

    first = verifier.check(command)
    assert first.accepted
    assert first.requester == "ana's phone"
    assert verifier.check(command).reason == "replay"


def test_replay_rejected_after_restart(events):
    command = payload(sign_unlock(SECRET, "front"))
    assert UnlockVerifier(SECRET, "front", MAX_AGE, events).check(command).accepted
    assert UnlockVerifier(SECRET, "front", MAX_AGE, events).check(command).reason == "replay"


@pytest.mark.parametrize(
    "age, reason",
    [(MAX_AGE + 5, "stale"), (-(MAX_AGE + 5), "stale"), (MAX_AGE - 5, "accepted"), (-(MAX_AGE - 5), "accepted")],
)
def test_timestamp_window(events, age, reason):
    now = time.time()
    command = payload(sign_unlock(SECRET, "front", ts=int(now - age)))
    assert UnlockVerifier(SECRET, "front", MAX_AGE, events).check(command, now=now).reason == reason


def test_wrong_secret_or_door_rejected(events):
    verifier = UnlockVerifier(SECRET, "front", MAX_AGE, events)
    assert verifier.check(payload(sign_unlock(b"another secret of 32 characters!", "front"))).reason == "bad_signature"
    assert verifier.check(payload(sign_unlock(SECRET, "back"))).reason == "bad_signature"


def test_changed_requester_breaks_signature(events):
    command = sign_unlock(SECRET, "front", requester="ana")
    command["by"] = "mallory"
    assert UnlockVerifier(SECRET, "front", MAX_AGE, events).check(payload(command)).reason == "bad_signature"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"UNLOCK",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"ts": "now", "nonce": "00112233445566778899", "hmac": "' + b"0" * 64 + b'"}',
        b'{"ts": 1, "nonce": "short", "hmac": "' + b"0" * 64 + b'"}',
        b'{"ts": 1, "nonce": "00112233445566778899", "hmac": "xyz"}',
        b'{"ts": true, "nonce": "00112233445566778899", "hmac": "' + b"0" * 64 + b'"}',
        b" " * 2000,
    ],
)
def test_malformed_commands_invalid(events, raw):
    assert UnlockVerifier(SECRET, "front", MAX_AGE, events).check(raw).reason == "invalid"


def test_bad_signature_stores_no_nonce(events):
    command = sign_unlock(SECRET, "front")
    forged = dict(command, hmac="0" * 64)
    verifier = UnlockVerifier(SECRET, "front", MAX_AGE, events)
    assert verifier.check(payload(forged)).reason == "bad_signature"
    # The genuine command with the same nonce still works.
    assert verifier.check(payload(command)).accepted


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_recipe_produces_valid_command(events, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    # The shell recipe documented in docs/mqtt.md.
    script = r"""
        device=front; by=shell
        ts=$(date +%s); nonce=$(openssl rand -hex 16)
        hmac=$(printf 'edgeface-unlock\n%s\n%s\n%s\n%s' "$device" "$ts" "$nonce" "$by" \
            | openssl dgst -sha256 -hmac "$(cat "$1")" -r | cut -d' ' -f1)
        printf '{"ts": %s, "nonce": "%s", "hmac": "%s", "by": "%s"}' "$ts" "$nonce" "$hmac" "$by"
    """
    output = subprocess.run(["sh", "-c", script, "sh", str(secret_file)], capture_output=True, check=True).stdout
    verdict = UnlockVerifier(SECRET, "front", MAX_AGE, events).check(output)
    assert verdict.accepted, output
    assert verdict.requester == "shell"


def test_sign_unlock_command_line(events, tmp_path, capsys):
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    assert main(["mqtt", "sign-unlock", "--secret-file", str(secret_file), "--device-id", "front", "--by", "ana"]) == 0
    printed = capsys.readouterr().out.strip().encode()
    verdict = UnlockVerifier(SECRET, "front", MAX_AGE, events).check(printed)
    assert verdict.accepted
    assert verdict.requester == "ana"


def test_sign_unlock_without_secret_fails(capsys):
    assert main(["mqtt", "sign-unlock"]) == 2
    assert "--secret-file" in capsys.readouterr().err


def test_sign_unlock_rejects_short_secret(tmp_path, capsys):
    secret_file = tmp_path / "secret"
    secret_file.write_text("short\n")
    assert main(["mqtt", "sign-unlock", "--secret-file", str(secret_file)]) == 2
    assert "openssl rand -hex 32" in capsys.readouterr().err
