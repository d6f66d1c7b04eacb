"""The MQTT bridge: publishes the event log's outbox and the door's state, receives commands.

One publisher thread does all the publishing, and paho's network thread
receives. Neither is ever waited on by the door loop: :meth:`MqttBridge.wake`
and :meth:`MqttBridge.update_state` only set flags. Events are published from
the event log's outbox with QoS 1 in ``seq`` order and marked published only
when the broker acknowledges them (PUBACK), so a broker outage or a crash
loses no event unless the outbox overflows. After a restart an event may be sent twice, and subscribers
deduplicate by ``id``.

Commands arrive on ``edgeface/<device_id>/command/<name>``. Retained commands
are never acted on. ``unlock`` is off unless ``mqtt.remote_unlock`` is true,
and then needs a signature (see :mod:`edgeface.remote_commands`).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from . import __version__
from .errors import ConfigError
from .events import Event, EventLog, json_default
from .mqtt_discovery import Topics, discovery_messages
from .remote_commands import PAYLOAD_MAX_BYTES, UnlockVerifier, load_secret

log = logging.getLogger(__name__)

# The outbox is also read this often, so events recorded by other processes
# (edgeface sync) go out without a wake().
OUTBOX_POLL_SECONDS = 1.0
# Events published but not yet acknowledged, at most.
INFLIGHT_MAX = 100
# An event unacknowledged this long while connected is sent again.
INFLIGHT_TIMEOUT_SECONDS = 60.0
KEEPALIVE_SECONDS = 30
RECONNECT_MIN_SECONDS = 1
RECONNECT_MAX_SECONDS = 30
# stop() publishes what it can for this long before disconnecting.
STOP_FLUSH_SECONDS = 2.0
# reload and sync are accepted at most this often, so that a flood of
# commands cannot keep the Pi busy reloading.
COMMAND_MIN_INTERVAL_SECONDS = 10.0
# Rejected commands are recorded at most this often, with a count of the
# others, so that a flood of bad commands cannot push decisions out of the log.
REJECTED_RECORD_INTERVAL_SECONDS = 5.0

_RETAINED_STATE = {
    # update_state key -> (Topics attribute, payload function)
    "door": ("door", lambda value: str(value)),
    "contact": ("contact", lambda value: "None" if value is None else str(value)),
    "unknown_present": ("unknown_present", lambda value: "ON" if value else "OFF"),
    "camera_fault": ("camera_fault", lambda value: "ON" if value else "OFF"),
}
_HEALTH_KEYS = ("fps", "gallery_size", "people", "model")


class MqttBridge:
    """Connects the event log and the door's state to an MQTT broker and Home Assistant.

    :param config: the whole validated configuration; uses ``config["mqtt"]``
        and ``config["door"]["contact_pin"]`` (whether to announce a contact).
    :param events: the event log whose outbox is published.
    :param on_unlock: called from the MQTT thread with a short description of
        the requester when a signed, fresh unlock command arrives. It must
        return quickly (pulse the relay in the background).
    :param on_reload: called from the MQTT thread for ``command/reload``.
    :param on_sync: called from the MQTT thread for ``command/sync``.
    :raises ConfigError: the password file cannot be read, a password is set
        without a user name, or ``remote_unlock`` is on without a readable
        secret of at least 16 characters.
    """

    def __init__(
        self,
        config: dict,
        events: EventLog,
        *,
        on_unlock: Callable[[str], None],
        on_reload: Callable[[], None],
        on_sync: Callable[[], None],
    ) -> None:
        settings = config["mqtt"]
        self._settings = settings
        self._device_id = settings["device_id"]
        self._topics = Topics.for_device(self._device_id)
        self._ha_status_topic = f"{settings['discovery_prefix']}/status"
        self._contact_wired = config.get("door", {}).get("contact_pin") is not None
        self._events = events
        self._on_unlock = on_unlock
        self._on_reload = on_reload
        self._on_sync = on_sync

        self._verifier = None
        if settings["remote_unlock"]:
            secret = load_secret(settings["command_secret_file"])
            self._verifier = UnlockVerifier(secret, self._device_id, settings["command_max_age"], events)

        self._client = self._make_client(settings, read_password(settings))

        self._lock = threading.Lock()
        self._wake_event = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self._announce = False
        self._state: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._unknown_keys: set[str] = set()
        self._health_due = 0.0
        self._started = time.monotonic()
        # Event id -> (paho's message info, monotonic time sent). Only the
        # publisher thread uses it (and stop(), after that thread has ended).
        self._inflight: dict[str, tuple[paho.MQTTMessageInfo, float]] = {}
        self._last_command: dict[str, float] = {}
        self._last_rejection_record = float("-inf")
        self._rejections_unrecorded = 0
        self._last_connect_error = ""

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<MqttBridge {self._settings['host']}:{self._settings['port']} device={self._device_id!r} {state}>"

    def _make_client(self, settings: dict, password: str | None) -> paho.Client:
        client = make_client(settings, f"edgeface-{self._device_id}", password)
        client.will_set(self._topics.availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS)
        client.max_inflight_messages_set(20)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        return client

    # -- public interface ----------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and it has not dropped since."""
        return self._connected

    def start(self) -> None:
        """Start connecting in the background and return at once.

        Connection attempts repeat forever, backing off from 1 to 30 seconds.
        """
        if self._thread is not None:
            return
        settings = self._settings
        log.info("MQTT: connecting to %s:%d as %s (tls=%s)", settings["host"], settings["port"],
                 f"edgeface-{self._device_id}", settings["tls"])
        self._client.connect_async(settings["host"], settings["port"], keepalive=KEEPALIVE_SECONDS)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="edgeface-mqtt-publisher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask for the outbox to be published soon. Never blocks."""
        self._wake_event.set()

    def update_state(self, **state: Any) -> None:
        """Publish changed door state (retained). Never waits for the network or the database.

        Keys: ``door`` ("locked"/"unlocked"), ``contact`` ("open"/"closed"/None),
        ``last_person`` (str or None), ``unknown_present`` (bool),
        ``camera_fault`` (bool), and for the health message ``fps`` (float),
        ``gallery_size`` (int), ``people`` (int), ``model`` (str). A change of
        ``fps`` waits for the next periodic health message.
        """
        with self._lock:
            for key, value in state.items():
                if key not in _RETAINED_STATE and key != "last_person" and key not in _HEALTH_KEYS:
                    if key not in self._unknown_keys:
                        self._unknown_keys.add(key)
                        log.warning("MQTT: ignoring unknown state key %r (logged once)", key)
                    continue
                if key in self._state and self._state[key] == value:
                    continue
                self._state[key] = value
                if key == "fps":
                    continue
                self._dirty.add("health" if key in _HEALTH_KEYS else key)
        self._wake_event.set()

    def stop(self) -> None:
        """Publish what can be published within about 2 s, then retained ``offline``, and disconnect."""
        if self._thread is None or self._stopping.is_set():
            return
        deadline = time.monotonic() + STOP_FLUSH_SECONDS
        self._stopping.set()
        self._wake_event.set()
        self._thread.join(timeout=STOP_FLUSH_SECONDS)

        if self._connected:
            self._flush_until(deadline)
            info = self._client.publish(self._topics.availability, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.2, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as error:
                log.warning("MQTT: could not publish offline before stopping: %s", error)
        self._client.disconnect()
        self._client.loop_stop()
        self._mark_acknowledged()
        self._connected = False
        log.info("MQTT: stopped (%d events unpublished)", self._events.outbox_size())

    # -- publisher thread --------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake_event.wait(OUTBOX_POLL_SECONDS)
            self._wake_event.clear()
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the publisher must outlive any bug in one step
                log.exception("MQTT: publisher step failed; retrying")
                time.sleep(OUTBOX_POLL_SECONDS)

    def _step(self) -> None:
        self._mark_acknowledged()
        if not self._connected:
            return

        if self._announce:
            self._announce = False
            self._publish_announcement()

        with self._lock:
            dirty, self._dirty = self._dirty, set()
            state = dict(self._state)
        for key in sorted(dirty):
            self._publish_state(key, state)
        if "health" not in dirty and time.monotonic() >= self._health_due:
            self._publish_state("health", state)

        self._publish_outbox()

    def _flush_until(self, deadline: float) -> None:
        while time.monotonic() < deadline and self._connected:
            self._mark_acknowledged()
            self._publish_outbox()
            if not self._inflight and self._events.outbox_size() <= 0:
                return
            time.sleep(0.05)

    def _publish_announcement(self) -> None:
        """Publish availability, discovery configs and every known state (after a connect or HA restart)."""
        self._client.publish(self._topics.availability, "online", qos=1, retain=True)
        for topic, payload in discovery_messages(self._device_id, self._settings["discovery_prefix"],
                                                 contact_wired=self._contact_wired):
            self._client.publish(topic, payload, qos=1, retain=True)
        with self._lock:
            state = dict(self._state)
        for key in (*_RETAINED_STATE, "last_person", "health"):
            if key == "health" or key in state:
                self._publish_state(key, state)
        log.info("MQTT: published availability, discovery and state for %s", self._device_id)

    def _publish_state(self, key: str, state: dict) -> None:
        if key == "health":
            self._health_due = time.monotonic() + self._settings["health_interval"]
            payload = json.dumps(self._health(state), default=json_default)
            self._client.publish(self._topics.health, payload, qos=1, retain=True)
        elif key == "last_person":
            payload = json.dumps({"person": state.get("last_person"), "time": _now_iso()}, default=json_default)
            self._client.publish(self._topics.last_person, payload, qos=1, retain=True)
        else:
            attribute, render = _RETAINED_STATE[key]
            self._client.publish(getattr(self._topics, attribute), render(state.get(key)), qos=1, retain=True)

    def _health(self, state: dict) -> dict:
        return {
            "time": _now_iso(),
            "device": self._device_id,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self._started, 1),
            "fps": state.get("fps"),
            "gallery_size": state.get("gallery_size"),
            "people": state.get("people"),
            "model": state.get("model"),
            "outbox_pending": self._events.outbox_size(),
            "outbox_dropped": self._events.dropped(),
        }

    def _publish_outbox(self) -> None:
        self._expire_inflight(time.monotonic())
        room = INFLIGHT_MAX - len(self._inflight)
        if room <= 0:
            return

        for event in self._events.pending(limit=room + len(self._inflight)):
            if room <= 0 or not self._connected:
                break
            if event.id in self._inflight:
                continue
            self._publish_event(event)
            room -= 1

    def _publish_event(self, event: Event) -> None:
        message = event.as_message(self._device_id)
        if event.kind == "decision":
            # Home Assistant's event entity needs an event_type from its list.
            message["event_type"] = "granted" if event.data.get("granted") else "denied"
        info = self._client.publish(self._topics.event(event.kind), json.dumps(message), qos=1)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # With NO_CONN paho keeps the message and sends it after reconnecting.
            self._inflight[event.id] = (info, time.monotonic())
        else:
            log.warning("MQTT: cannot queue event %s: %s", event.id, paho.error_string(info.rc))

    def _expire_inflight(self, now: float) -> None:
        # NOTE: paho keeps QoS 1 messages until acknowledged, across
        # reconnects, so this only matters if a PUBACK is lost for good.
        if not self._connected:
            return
        for event_id, (_, sent) in list(self._inflight.items()):
            if now - sent > INFLIGHT_TIMEOUT_SECONDS:
                del self._inflight[event_id]
                log.warning("MQTT: event %s unacknowledged for %.0f s; sending it again", event_id, now - sent)

    def _mark_acknowledged(self) -> None:
        """Mark events published whose PUBACK has arrived (paho sets is_published() only then for QoS 1)."""
        acked = []
        for event_id, (info, _) in list(self._inflight.items()):
            try:
                published = info.is_published()
            except (RuntimeError, ValueError):
                published = False
                del self._inflight[event_id]
            if published:
                acked.append(event_id)
                del self._inflight[event_id]
        if acked:
            self._events.mark_published(acked)

    # -- paho callbacks (network thread) -----------------------------------

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._log_connect_error(f"broker refused the connection: {reason_code}")
            return
        log.info("MQTT: connected to %s:%d", self._settings["host"], self._settings["port"])
        self._last_connect_error = ""
        client.subscribe([(self._topics.commands, 1), (self._ha_status_topic, 1)])
        self._connected = True
        self._announce = True
        self._wake_event.set()

    def _handle_connect_fail(self, client, userdata) -> None:
        self._log_connect_error(f"cannot connect to {self._settings['host']}:{self._settings['port']}")

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected
        self._connected = False
        if was_connected and not self._stopping.is_set():
            log.warning("MQTT: connection lost (%s); events queue in the outbox until it is back", reason_code)

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._wake_event.set()

    def _handle_message(self, client, userdata, message: paho.MQTTMessage) -> None:
        try:
            if message.topic == self._ha_status_topic:
                if message.payload == b"online":
                    log.info("MQTT: Home Assistant is online; publishing discovery again")
                    self._announce = True
                    self._wake_event.set()
                return
            prefix = self._topics.command("")
            if message.topic.startswith(prefix):
                self._handle_command(message.topic[len(prefix):], message)
        except Exception:  # noqa: BLE001 - paho would drop the connection on an exception
            log.exception("MQTT: failed to handle a message on %s", message.topic)

    def _log_connect_error(self, text: str) -> None:
        if text != self._last_connect_error:
            log.warning("MQTT: %s; retrying in the background", text)
            self._last_connect_error = text

    # -- commands ----------------------------------------------------------

    def _handle_command(self, name: str, message: paho.MQTTMessage) -> None:
        if not message.payload and name in ("unlock", "reload", "sync", "lock"):
            return  # an empty payload clears a retained message; nothing to do
        if message.retain:
            self._reject(name, "retained", "")
            # Clear it, so that it is not delivered again on every reconnect.
            self._client.publish(message.topic, b"", qos=1, retain=True)
            return

        if name == "unlock":
            self._handle_unlock(message.payload)
        elif name in ("reload", "sync"):
            self._handle_maintenance(name)
        elif name == "lock":
            if message.payload.strip().upper() == b"UNLOCK":
                self._reject("lock", "unsigned", "Home Assistant lock entity")
            else:
                log.info("MQTT: lock command ignored; the door locks itself after each unlock")
        else:
            log.warning("MQTT: ignoring unknown command %r", name)

    def _handle_unlock(self, payload: bytes) -> None:
        if self._verifier is None:
            self._reject("unlock", "disabled", "")
            return
        verdict = self._verifier.check(payload)
        if not verdict.accepted:
            self._reject("unlock", verdict.reason, verdict.requester)
            return

        requester = f"mqtt unlock by {verdict.requester}" if verdict.requester else "mqtt unlock"
        log.info("MQTT: accepted unlock command nonce=%s by=%r", verdict.nonce, verdict.requester)
        self._events.record("command", {"command": "unlock", "accepted": True, "reason": "accepted",
                                        "by": verdict.requester or None})
        self._wake_event.set()
        self._on_unlock(requester)

    def _handle_maintenance(self, name: str) -> None:
        now = time.monotonic()
        last = self._last_command.get(name)
        if last is not None and now - last < COMMAND_MIN_INTERVAL_SECONDS:
            self._reject(name, "too_frequent", "")
            return
        self._last_command[name] = now
        log.info("MQTT: %s command received", name)
        self._events.record("command", {"command": name, "accepted": True, "reason": "accepted", "by": None})
        self._wake_event.set()
        callback = self._on_reload if name == "reload" else self._on_sync
        try:
            callback()
        except Exception:  # noqa: BLE001 - a failing reload must not drop the MQTT connection
            log.exception("MQTT: %s command failed", name)

    def _reject(self, name: str, reason: str, requester: str) -> None:
        now = time.monotonic()
        if now - self._last_rejection_record < REJECTED_RECORD_INTERVAL_SECONDS:
            log.debug("MQTT: rejected %s command: %s (not recorded, rate limit)", name, reason)
            self._rejections_unrecorded += 1
            return
        log.warning("MQTT: rejected %s command: %s by=%r (%d more rejected since the last one recorded)",
                    name, reason, requester, self._rejections_unrecorded)
        self._last_rejection_record = now
        self._events.record("command", {
            "command": name, "accepted": False, "reason": reason, "by": requester or None,
            "rejected_unrecorded": self._rejections_unrecorded,
        })
        self._rejections_unrecorded = 0
        self._wake_event.set()


def make_client(settings: dict, client_id: str, password: str | None) -> paho.Client:
    """Return a paho client (MQTT 3.1.1, clean session) with the user name, password and TLS of ``settings``.

    :raises ConfigError: ``mqtt.ca_certs`` cannot be loaded.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311, clean_session=True)
    # paho logs each failed reconnect attempt at ERROR; the bridge already
    # logs connection losses and failures in its own words, so only paho's
    # critical messages pass.
    paho_log = logging.getLogger("edgeface.mqtt.paho")
    paho_log.setLevel(logging.CRITICAL)
    client.enable_logger(paho_log)
    if settings["username"] is not None:
        client.username_pw_set(settings["username"], password)
    if settings["tls"]:
        try:
            client.tls_set(ca_certs=settings["ca_certs"], cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"cannot use mqtt.ca_certs {settings['ca_certs']}: {error}") from error
    return client


def read_password(settings: dict) -> str | None:
    """Return the MQTT password from ``mqtt.password`` or ``mqtt.password_file``, or None.

    :raises ConfigError: both are set, the file cannot be read, or a password
        is set without a user name.
    """
    password, password_file = settings["password"], settings["password_file"]
    if password is not None and password_file is not None:
        raise ConfigError("set either mqtt.password or mqtt.password_file, not both")
    if password_file is not None:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read mqtt.password_file {password_file}: {error}") from error
    if password is not None and settings["username"] is None:
        raise ConfigError("mqtt.password is set but mqtt.username is not: set the user name too")
    return password


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
