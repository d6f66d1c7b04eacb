"""A real mosquitto broker on a free loopback port, and a subscriber that records what it receives.

Tests import the ``broker`` fixture from here. It skips, saying how to install
mosquitto, when the broker is not installed.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
WAIT_SECONDS = 20.0


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """Create a test CA and a server certificate for 127.0.0.1; return (ca, certfile, keyfile)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    commands = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=edgeface test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", extensions],
    ]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ca, cert, key


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """mosquitto with persistence in ``folder``, restartable on the same port.

    :param users: user name -> password; when given, anonymous clients are rejected.
    :param tls: ``(certfile, keyfile)`` of the server; the listener then speaks TLS only.
    """

    def __init__(self, folder: Path, port: int, *, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.folder = folder
        self.port = port
        self.config = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        data = folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        access = "allow_anonymous true\n"
        if users:
            passwords = folder / "passwords"
            passwords.touch()
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
            access = f"allow_anonymous false\npassword_file {passwords}\n"
        if tls:
            access += f"certfile {tls[0]}\nkeyfile {tls[1]}\n"
        self.config.write_text(
            f"listener {port} 127.0.0.1\n"
            + access
            + "persistence true\n"
            f"persistence_location {data}/\n"
            "log_type all\n"
            # Run as root, mosquitto would switch to the user "mosquitto",
            # which cannot write its persistence file in our folder.
            f"user {getpass.getuser()}\n",
            encoding="utf-8",
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log_file:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log_file, stderr=log_file)
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {WAIT_SECONDS} s")

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM), so that it saves persistent sessions."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed: sudo apt-get install mosquitto")
    server = Broker(tmp_path / "broker", free_port())
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self):
        return json.loads(self.payload)


class Collector:
    """A subscriber that keeps every message it receives.

    :param persistent: use a persistent session (clean_session false), so the
        broker keeps QoS 1 messages for it while it is disconnected.
    """

    def __init__(self, port: int, topics: list[str], *, persistent: bool = False, client_id: str | None = None) -> None:
        self.messages: list[Received] = []
        self._condition = threading.Condition()
        self._topics = topics
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(WAIT_SECONDS):
            raise RuntimeError("collector did not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_message(self, client, userdata, message):
        with self._condition:
            self.messages.append(Received(message.topic, message.payload, bool(message.retain)))
            self._condition.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._condition:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Received | None:
        found = self.on(topic)
        return found[-1] if found else None

    def wait_for(self, predicate, timeout: float = WAIT_SECONDS, what: str = "a message"):
        """Wait until ``predicate(messages)`` is true; fail the test naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = sorted({m.topic for m in self.messages})
                    pytest.fail(f"timed out after {timeout} s waiting for {what}; topics received: {topics}")
                self._condition.wait(min(remaining, 0.2))

    def wait_topic(self, topic: str, payload: bytes | None = None, timeout: float = WAIT_SECONDS) -> Received:
        def found(messages):
            return any(m.topic == topic and (payload is None or m.payload == payload) for m in messages)

        self.wait_for(found, timeout, f"{payload!r} on {topic}")
        return [m for m in self.on(topic) if payload is None or m.payload == payload][-1]

    def publish(self, topic: str, payload, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_SECONDS)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


