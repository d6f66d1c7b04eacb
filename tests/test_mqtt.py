"""The MQTT bridge against a real mosquitto: discovery, availability, outbox and commands."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edgeface.cli import main
from edgeface.config import defaults
from edgeface.door import Door
from edgeface.errors import ConfigError
from edgeface.events import EventLog
from edgeface.mqtt import MqttBridge
from edgeface.remote_commands import sign_unlock
from conftest import wait_until
from mqtt_broker import MOSQUITTO, Broker, Collector, broker, free_port, make_certificates  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "door1"
BASE = f"edgeface/{DEVICE}"
SECRET = b"0123456789abcdef0123456789abcdef"


def make_config(port: int, **mqtt) -> dict:
    config = defaults()
    config["mqtt"].update({"enabled": True, "host": "127.0.0.1", "port": port, "device_id": DEVICE, **mqtt})
    return config


def decision(i: int) -> dict:
    return {"person": "ana" if i % 2 else None, "granted": bool(i % 2), "reason": "granted" if i % 2 else "unknown",
            "votes": 3, "distance": 0.3, "track": i, "frames": 3}


class Relay:
    """The real door module on mock pins; on_unlock pulses it as the daemon does."""

    def __init__(self) -> None:
        self.factory = MockFactory()
        settings = defaults()["door"] | {"unlock_seconds": 0.1}
        self.door = Door(settings, pin_factory=self.factory)
        self.requests: list[str] = []

    def unlock(self, requester: str) -> None:
        self.requests.append(requester)
        self.door.pulse(f"remote:{requester}")

    def pulses(self) -> int:
        states = [s.state for s in self.door.relay_pin.states]
        return sum(1 for before, after in zip(states, states[1:]) if not before and after)

    def is_off(self) -> bool:
        return not self.door.relay_pin.state

    def close(self) -> None:
        self.door.close()


@pytest.fixture
def bridge_factory(tmp_path):
    created = []

    def make(port, *, events=None, relay=None, on_reload=None, on_sync=None, config=None, **mqtt):
        events = events or EventLog(tmp_path / "events.db")
        bridge = MqttBridge(
            config or make_config(port, **mqtt),
            events,
            on_unlock=relay.unlock if relay else (lambda requester: pytest.fail("unexpected unlock")),
            on_reload=on_reload or (lambda: None),
            on_sync=on_sync or (lambda: None),
        )
        created.append((bridge, events))
        return bridge, events

    yield make
    for bridge, events in created:
        bridge.stop()
        events.close()


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "command.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


# -- discovery and availability ------------------------------------------------


def test_discovery_and_availability(broker, bridge_factory):
    collector = Collector(broker.port, ["homeassistant/#", f"{BASE}/#"])
    config = make_config(broker.port)
    config["door"]["contact_pin"] = 27
    bridge, _ = bridge_factory(broker.port, config=config)
    bridge.update_state(door="locked", contact="closed", last_person="ana", unknown_present=True,
                        camera_fault=False, fps=7.5, gallery_size=12, people=3, model="dlib_resnet_v1")
    bridge.start()

    collector.wait_topic(f"{BASE}/availability", b"online")
    lock = collector.wait_topic("homeassistant/lock/edgeface_door1/door/config").json()
    assert lock["state_topic"] == f"{BASE}/door"
    assert lock["availability_topic"] == f"{BASE}/availability"
    assert lock["state_locked"] == "locked"
    assert lock["unique_id"] == "edgeface_door1_door"
    assert lock["device"]["identifiers"] == ["edgeface_door1"]
    # Deprecated by Home Assistant; entity ids come from the device and entity names.
    assert "object_id" not in lock

    expected = {
        "sensor/edgeface_door1/last_person": None,
        "binary_sensor/edgeface_door1/unknown_face": None,
        "binary_sensor/edgeface_door1/door_contact": None,
        "binary_sensor/edgeface_door1/camera_fault": "diagnostic",
        "event/edgeface_door1/decision": None,
        "sensor/edgeface_door1/fps": "diagnostic",
        "sensor/edgeface_door1/gallery_size": "diagnostic",
        "sensor/edgeface_door1/model": "diagnostic",
    }
    for path, category in expected.items():
        entity = collector.wait_topic(f"homeassistant/{path}/config").json()
        assert entity["availability_topic"] == f"{BASE}/availability", path
        assert entity.get("entity_category") == category, path
    event_entity = collector.last("homeassistant/event/edgeface_door1/decision/config").json()
    assert event_entity["state_topic"] == f"{BASE}/event"
    assert event_entity["event_types"] == ["granted", "denied"]

    collector.wait_topic(f"{BASE}/door", b"locked")
    collector.wait_topic(f"{BASE}/contact", b"closed")
    collector.wait_topic(f"{BASE}/unknown_present", b"ON")
    collector.wait_topic(f"{BASE}/camera_fault", b"OFF")
    assert collector.wait_topic(f"{BASE}/last_person").json()["person"] == "ana"
    health = collector.wait_topic(f"{BASE}/health").json()
    assert health["gallery_size"] == 12
    assert health["people"] == 3
    assert health["model"] == "dlib_resnet_v1"
    assert health["fps"] == 7.5

    bridge.update_state(door="unlocked")
    collector.wait_topic(f"{BASE}/door", b"unlocked")

    # Home Assistant's birth message makes the bridge publish discovery again.
    collector.publish("homeassistant/status", "online")
    collector.wait_for(lambda _: len(collector.on("homeassistant/lock/edgeface_door1/door/config")) >= 2,
                       what="discovery published again after the birth message")

    bridge.stop()
    collector.wait_topic(f"{BASE}/availability", b"offline")
    collector.close()

    # Retained: a client connecting later receives the configs and "offline".
    late = Collector(broker.port, ["homeassistant/lock/#", f"{BASE}/availability", f"{BASE}/door"])
    assert late.wait_topic(f"{BASE}/availability").payload == b"offline"
    assert late.wait_topic(f"{BASE}/availability").retain
    assert late.wait_topic("homeassistant/lock/edgeface_door1/door/config").retain
    assert late.wait_topic(f"{BASE}/door").payload == b"unlocked"
    late.close()


def test_health_published_periodically(broker, bridge_factory, tmp_path):
    events = EventLog(tmp_path / "events.db", outbox_max=10)
    for i in range(12):
        events.record("decision", decision(i))
    collector = Collector(broker.port, [f"{BASE}/health"])
    bridge, _ = bridge_factory(broker.port, events=events, health_interval=1.0)
    # NumPy numbers, as the recognition loop measures them.
    bridge.update_state(fps=np.float32(4.0), gallery_size=np.int64(20), people=4, model="m")
    bridge.start()

    collector.wait_for(lambda _: len(collector.on(f"{BASE}/health")) >= 3, what="three health messages")
    health = collector.last(f"{BASE}/health").json()
    assert health["device"] == DEVICE
    assert health["outbox_dropped"] == 2
    assert health["people"] == 4
    assert health["fps"] == 4.0
    assert health["gallery_size"] == 20
    assert health["uptime_seconds"] >= 0
    collector.close()


def test_contact_entity_removed_when_not_wired(broker, bridge_factory):
    collector = Collector(broker.port, ["homeassistant/binary_sensor/#"])
    bridge, _ = bridge_factory(broker.port)
    bridge.start()
    removed = collector.wait_topic("homeassistant/binary_sensor/edgeface_door1/door_contact/config")
    assert removed.payload == b""
    collector.close()


BRIDGE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from edgeface.config import defaults
    from edgeface.events import EventLog
    from edgeface.mqtt import MqttBridge

    config = defaults()
    config["mqtt"].update(enabled=True, host="127.0.0.1", port=int(sys.argv[2]), device_id="door1")
    events = EventLog(sys.argv[3])
    bridge = MqttBridge(config, events, on_unlock=lambda r: None, on_reload=lambda: None, on_sync=lambda: None)
    bridge.start()
    for i in range(int(sys.argv[4])):
        events.record("decision", {"person": None, "granted": False, "reason": "unknown",
                                   "votes": 0, "distance": None, "track": i, "frames": 3})
    print("ready", flush=True)
    time.sleep(600)
    """
)


def start_bridge_process(port: int, database: Path, events_to_record: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", BRIDGE_SCRIPT, str(ROOT), str(port), str(database), str(events_to_record)],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def test_last_will_when_process_killed(broker, tmp_path):
    collector = Collector(broker.port, [f"{BASE}/availability"])
    process = start_bridge_process(broker.port, tmp_path / "events.db", 0)
    try:
        collector.wait_topic(f"{BASE}/availability", b"online")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        collector.wait_for(lambda _: collector.last(f"{BASE}/availability").payload == b"offline",
                           what="the last will after SIGKILL")
    finally:
        if process.poll() is None:
            process.kill()
        collector.close()


# -- outbox --------------------------------------------------------------------


def test_no_events_lost_across_broker_restart(broker, bridge_factory, tmp_path):
    collector = Collector(broker.port, [f"{BASE}/event"], persistent=True, client_id="outage-collector")
    bridge, events = bridge_factory(broker.port)
    bridge.start()
    wait_until(lambda: bridge.connected, what="the bridge to connect")

    recorded = []
    for i in range(300):
        recorded.append(events.record("decision", decision(i)).id)
        bridge.wake()

    broker.stop()
    wait_until(lambda: not bridge.connected, what="the bridge to notice the outage")
    for i in range(300, 800):
        recorded.append(events.record("decision", decision(i)).id)
        bridge.wake()
    # Everything recorded during the outage is waiting in the outbox.
    assert events.outbox_size() >= 500

    broker.start()
    for i in range(800, 1000):
        recorded.append(events.record("decision", decision(i)).id)
        bridge.wake()

    def unique_ids():
        return {json.loads(m.payload)["id"] for m in collector.on(f"{BASE}/event")}

    collector.wait_for(lambda _: len(unique_ids()) >= 1000, timeout=60, what="1,000 distinct events")
    received = [json.loads(m.payload) for m in collector.on(f"{BASE}/event")]
    first_seen = list(dict.fromkeys(message["id"] for message in received))
    assert first_seen == recorded
    assert all(message["device"] == DEVICE and message["kind"] == "decision" for message in received)
    assert {message["event_type"] for message in received} == {"granted", "denied"}
    print(f"received {len(received)} messages for {len(recorded)} events ({len(received) - len(recorded)} duplicates)")

    wait_until(lambda: events.outbox_size() == 0, what="the outbox to empty")
    assert events.dropped() == 0
    collector.close()


def test_events_survive_bridge_crash(broker, bridge_factory, tmp_path):
    database = tmp_path / "events.db"
    broker.stop()

    # A daemon records 25 events while the broker is down, then is killed.
    process = start_bridge_process(broker.port, database, 25)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    # Another process (edgeface sync) adds its own event to the same file.
    with EventLog(database) as other:
        sync_event = other.record("sync", {"added": 1, "removed": 0})

    broker.start()
    collector = Collector(broker.port, [f"{BASE}/event/#"])
    bridge, events = bridge_factory(broker.port, events=EventLog(database))
    expected = [e.id for e in events.pending(limit=1000)]
    assert len(expected) == 26
    assert expected[-1] == sync_event.id
    bridge.start()

    def ids():
        return list(dict.fromkeys(json.loads(m.payload)["id"] for m in collector.messages))

    collector.wait_for(lambda _: len(ids()) >= 26, what="26 events after the restart")
    assert ids() == expected
    assert collector.last(f"{BASE}/event/sync").json()["added"] == 1
    collector.close()


def test_broker_absent_door_goes_on(bridge_factory):
    bridge, events = bridge_factory(free_port())
    bridge.start()
    for i in range(5):
        events.record("decision", decision(i))
        bridge.wake()
        bridge.update_state(door="locked", unknown_present=bool(i % 2), fps=5.0)
    assert not bridge.connected
    bridge.stop()
    assert events.outbox_size() == 5


# -- commands ------------------------------------------------------------------


def command_events(events: EventLog) -> list[dict]:
    return [e.data for e in reversed(events.recent(limit=100, kind="command"))]


def test_signed_unlock_pulses_relay_and_replay_rejected(broker, bridge_factory, tmp_path):
    relay = Relay()
    bridge, events = bridge_factory(broker.port, relay=relay, remote_unlock=True,
                                    command_secret_file=str(secret_file(tmp_path)))
    bridge.start()
    wait_until(lambda: bridge.connected, what="the bridge to connect")
    sender = Collector(broker.port, [f"{BASE}/command/#"])

    payload = json.dumps(sign_unlock(SECRET, DEVICE, requester="phone"))
    sender.publish(f"{BASE}/command/unlock", payload)
    wait_until(lambda: relay.pulses() == 1 and relay.is_off(), what="one relay pulse")
    assert relay.requests == ["mqtt unlock by phone"]
    assert command_events(events)[-1] == {"command": "unlock", "accepted": True, "reason": "accepted", "by": "phone"}

    sender.publish(f"{BASE}/command/unlock", payload)
    wait_until(lambda: any(e["reason"] == "replay" for e in command_events(events)), what="the replay rejection")
    assert relay.pulses() == 1
    assert relay.requests == ["mqtt unlock by phone"]
    sender.close()
    relay.close()


def test_retained_unlock_ignored(broker, bridge_factory, tmp_path):
    relay = Relay()
    sender = Collector(broker.port, [f"{BASE}/command/#"])
    payload = json.dumps(sign_unlock(SECRET, DEVICE))
    sender.publish(f"{BASE}/command/unlock", payload, retain=True)

    bridge, events = bridge_factory(broker.port, relay=relay, remote_unlock=True,
                                    command_secret_file=str(secret_file(tmp_path)))
    bridge.start()
    wait_until(lambda: any(e["reason"] == "retained" for e in command_events(events)),
               what="the retained command to be rejected")
    # The bridge clears the retained command so that it is not delivered again.
    sender.wait_topic(f"{BASE}/command/unlock", b"")
    assert relay.pulses() == 0
    assert relay.requests == []
    sender.close()
    relay.close()


def test_unlock_disabled_by_default(broker, bridge_factory):
    relay = Relay()
    bridge, events = bridge_factory(broker.port, relay=relay)
    bridge.start()
    wait_until(lambda: bridge.connected, what="the bridge to connect")
    sender = Collector(broker.port, [f"{BASE}/availability"])
    sender.publish(f"{BASE}/command/unlock", json.dumps(sign_unlock(SECRET, DEVICE)))
    sender.publish(f"{BASE}/command/lock", "UNLOCK")
    wait_until(lambda: any(e["reason"] == "disabled" for e in command_events(events)), what="the rejection")
    assert relay.pulses() == 0
    sender.close()
    relay.close()


def test_reload_and_sync_commands(broker, bridge_factory):
    reloads, syncs = threading.Semaphore(0), threading.Semaphore(0)
    bridge, events = bridge_factory(broker.port, on_reload=reloads.release, on_sync=syncs.release)
    bridge.start()
    wait_until(lambda: bridge.connected, what="the bridge to connect")
    sender = Collector(broker.port, [f"{BASE}/availability"])

    sender.publish(f"{BASE}/command/reload", "1")
    assert reloads.acquire(timeout=20)
    sender.publish(f"{BASE}/command/sync", "1")
    assert syncs.acquire(timeout=20)
    # A second reload right away is rejected, so commands cannot keep the Pi busy.
    sender.publish(f"{BASE}/command/reload", "1")
    wait_until(lambda: any(e["reason"] == "too_frequent" for e in command_events(events)), what="the rejection")
    assert not reloads.acquire(timeout=0)
    accepted = [e["command"] for e in command_events(events) if e["accepted"]]
    assert accepted == ["reload", "sync"]
    sender.close()


# -- configuration errors --------------------------------------------------------


def test_remote_unlock_needs_secret(tmp_path):
    with EventLog(tmp_path / "events.db") as events:
        with pytest.raises(ConfigError, match="command_secret_file"):
            MqttBridge(make_config(1883, remote_unlock=True), events,
                       on_unlock=print, on_reload=print, on_sync=print)
        with pytest.raises(ConfigError, match="cannot read"):
            MqttBridge(make_config(1883, remote_unlock=True, command_secret_file=str(tmp_path / "missing")), events,
                       on_unlock=print, on_reload=print, on_sync=print)
        short = tmp_path / "short"
        short.write_text("abc\n")
        with pytest.raises(ConfigError, match="too short"):
            MqttBridge(make_config(1883, remote_unlock=True, command_secret_file=str(short)), events,
                       on_unlock=print, on_reload=print, on_sync=print)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"username": "door", "password": "a", "password_file": "/x"}, "not both"),
        ({"password": "a"}, "username"),
        ({"username": "door", "password_file": "/nonexistent/password"}, "cannot read mqtt.password_file"),
    ],
)
def test_password_settings_checked(tmp_path, settings, message):
    with EventLog(tmp_path / "events.db") as events:
        with pytest.raises(ConfigError, match=message):
            MqttBridge(make_config(1883, **settings), events, on_unlock=print, on_reload=print, on_sync=print)


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None,
                    reason="openssl and mosquitto_passwd (package mosquitto) are needed for the TLS test")
def test_tls_with_password_file(tmp_path, bridge_factory, caplog, capsys):
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed: sudo apt-get install mosquitto")
    ca, cert, key = make_certificates(tmp_path / "certs")
    server = Broker(tmp_path / "tls-broker", free_port(), users={"door": "s3cret-pass"}, tls=(cert, key))
    server.start()
    try:
        password_file = tmp_path / "mqtt-password"
        password_file.write_text("s3cret-pass\n")
        bridge, _ = bridge_factory(server.port, tls=True, ca_certs=str(ca), username="door",
                                   password_file=str(password_file))
        bridge.start()
        wait_until(lambda: bridge.connected, what="the TLS connection with the password from the file")

        wrong, _ = bridge_factory(server.port, tls=True, ca_certs=str(ca), username="door", password="wrong-pass-7341",
                                  config=None, device_id="door2", events=EventLog(tmp_path / "other.db"))
        with caplog.at_level("WARNING", logger="edgeface.mqtt"):
            wrong.start()
            wait_until(lambda: "broker refused the connection" in caplog.text, what="the refusal to be logged")
        assert not wrong.connected
        assert "s3cret-pass" not in caplog.text
        assert "wrong-pass-7341" not in caplog.text

        # edgeface mqtt check names the setting to fix.
        config = write_config(tmp_path, server.port, tls=True, ca_certs=str(ca), username="door", password="wrong-pass-7341")
        assert main(["mqtt", "check", "--config", str(config)]) == 1
        assert "check mqtt.username and the password" in capsys.readouterr().err
        config = write_config(tmp_path, server.port, tls=True, ca_certs=str(ca), username="door",
                              password_file=str(password_file))
        assert main(["mqtt", "check", "--config", str(config)]) == 0
        assert "over TLS" in capsys.readouterr().out
    finally:
        server.stop()


# -- edgeface mqtt check ---------------------------------------------------------


def write_config(tmp_path: Path, port: int, **mqtt) -> Path:
    settings = {"enabled": True, "host": "127.0.0.1", "port": port, "device_id": DEVICE, **mqtt}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"mqtt": settings}), encoding="utf-8")
    return path


def test_check_command_connects(broker, tmp_path, capsys):
    assert main(["mqtt", "check", "--config", str(write_config(tmp_path, broker.port))]) == 0
    output = capsys.readouterr().out
    assert f"connected to 127.0.0.1:{broker.port} as anonymous over plain TCP" in output


def test_check_command_reports_refusal(tmp_path, capsys):
    port = free_port()
    assert main(["mqtt", "check", "--config", str(write_config(tmp_path, port))]) == 1
    error = capsys.readouterr().err
    assert f"127.0.0.1:{port} refused the connection" in error
    assert "mqtt.port" in error


def test_check_command_invalid_settings(tmp_path, capsys):
    config = write_config(tmp_path, 1883, password="x")
    assert main(["mqtt", "check", "--config", str(config)]) == 2
    assert "mqtt.username" in capsys.readouterr().err
