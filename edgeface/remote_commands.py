"""Signed remote unlock commands: the signature format and its check.

An unlock command is the JSON object ``{"ts": ..., "nonce": ..., "hmac": ...}``
with an optional ``"by"`` (the requester, shown in the event log). ``ts`` is an
integer unix time in seconds, ``nonce`` 16 to 64 lowercase hex digits that
the sender never reuses, and ``hmac`` the lowercase hex HMAC-SHA256, keyed
with the shared secret, of these five lines joined by ``\\n`` (no final
newline)::

    edgeface-unlock
    <device_id>
    <ts>
    <nonce>
    <by, or an empty line>

The device id is signed so that a command for one door does not open another
door that shares the secret. The secret is the text of
``mqtt.command_secret_file`` without surrounding whitespace, at least 16
characters (``openssl rand -hex 32`` makes a good one). ``edgeface mqtt
sign-unlock`` (in :mod:`edgeface.mqtt_cli`) prints a signed command.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, EventLogError
from .events import EventLog

log = logging.getLogger(__name__)

SECRET_MIN_CHARS = 16
# Larger payloads are rejected before parsing; a valid command is about 200 bytes.
PAYLOAD_MAX_BYTES = 1024
REQUESTER_MAX_CHARS = 64

_NONCE = re.compile(r"[0-9a-f]{16,64}")
_HMAC = re.compile(r"[0-9a-f]{64}")


def load_secret(path: str | os.PathLike[str] | None) -> bytes:
    """Read the shared command secret.

    :raises ConfigError: the file is not set, cannot be read, or contains fewer
        than ``SECRET_MIN_CHARS`` characters.
    """
    if path is None:
        raise ConfigError(
            "mqtt.remote_unlock is true but mqtt.command_secret_file is not set: "
            "create one with `openssl rand -hex 32 > secret && chmod 600 secret` and set its path"
        )
    path = Path(path)
    try:
        secret = path.read_bytes().strip()
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"cannot read mqtt.command_secret_file {path}: {error.strerror}") from error
    if len(secret) < SECRET_MIN_CHARS:
        raise ConfigError(
            f"mqtt.command_secret_file {path} is too short ({len(secret)} characters, minimum {SECRET_MIN_CHARS}): "
            "create a longer secret with `openssl rand -hex 32`"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("command secret file %s is readable by other users; run chmod 600 on it", path)
    return secret


def signing_text(device_id: str, ts: int, nonce: str, requester: str) -> bytes:
    """Return the bytes that the HMAC of an unlock command covers."""
    return f"edgeface-unlock\n{device_id}\n{ts}\n{nonce}\n{requester}".encode("utf-8")


def sign_unlock(secret: bytes, device_id: str, *, requester: str = "", ts: int | None = None,
                nonce: str | None = None) -> dict:
    """Return a signed unlock command for ``device_id``, ready to send as JSON.

    :param requester: the requester's name, recorded in the event log and signed.
    :param ts: unix time in seconds; now when None.
    :param nonce: hex digits; 32 random ones when None.
    """
    ts = int(time.time()) if ts is None else ts
    nonce = secrets.token_hex(16) if nonce is None else nonce
    digest = hmac.new(secret, signing_text(device_id, ts, nonce, requester), hashlib.sha256).hexdigest()
    command = {"ts": ts, "nonce": nonce, "hmac": digest}
    if requester:
        command["by"] = requester
    return command


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one unlock command.

    ``reason`` is ``"accepted"`` or why the command was rejected:

    - ``invalid``: not a well-formed command;
    - ``bad_signature``: wrong secret, door or contents;
    - ``stale``: ``ts`` is further than the maximum age from now, either way;
    - ``replay``: the nonce was seen before;
    - ``nonce_store_failed``: the nonce could not be stored, so a later
      replay could not be detected.
    """

    accepted: bool
    reason: str
    requester: str = ""
    nonce: str | None = None


class UnlockVerifier:
    """Check signed unlock commands, remembering nonces to reject replays.

    Nonces are kept in memory and in the event log's database until their
    command's maximum age has passed, so a captured command cannot be
    replayed, not even after a restart.

    :param max_age: seconds a command stays valid; also the clock difference
        tolerated between the sender and this machine.
    """

    def __init__(self, secret: bytes, device_id: str, max_age: float, events: EventLog) -> None:
        self._secret = secret
        self._device_id = device_id
        self._max_age = max_age
        self._events = events
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, payload: bytes, now: float | None = None) -> Verdict:
        """Return whether ``payload`` is a fresh, correctly signed unlock command for this door."""
        now = time.time() if now is None else now
        parsed = _parse(payload)
        if parsed is None:
            return Verdict(False, "invalid")
        ts, nonce, digest, requester = parsed

        # The signature is checked before anything is stored, so that
        # unsigned traffic cannot fill the nonce table.
        expected = hmac.new(self._secret, signing_text(self._device_id, ts, nonce, requester), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, digest):
            return Verdict(False, "bad_signature", requester, nonce)
        if abs(now - ts) > self._max_age:
            return Verdict(False, "stale", requester, nonce)

        with self._lock:
            self._seen = {n: expiry for n, expiry in self._seen.items() if expiry >= now}
            if nonce in self._seen:
                return Verdict(False, "replay", requester, nonce)
            expires = ts + self._max_age
            self._seen[nonce] = expires
            try:
                fresh = self._events.remember_nonce(nonce, expires)
            except EventLogError as error:
                log.error("rejecting unlock command: %s", error)
                return Verdict(False, "nonce_store_failed", requester, nonce)
        if not fresh:
            return Verdict(False, "replay", requester, nonce)
        return Verdict(True, "accepted", requester, nonce)


def _parse(payload: bytes) -> tuple[int, str, str, str] | None:
    if len(payload) > PAYLOAD_MAX_BYTES:
        return None
    try:
        command = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(command, dict):
        return None
    ts, nonce, digest = command.get("ts"), command.get("nonce"), command.get("hmac")
    requester = command.get("by", "")
    if isinstance(ts, bool) or not isinstance(ts, int):
        return None
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        return None
    if not isinstance(digest, str) or not _HMAC.fullmatch(digest):
        return None
    if not isinstance(requester, str) or len(requester) > REQUESTER_MAX_CHARS or not requester.isprintable():
        return None
    return ts, nonce, digest, requester
