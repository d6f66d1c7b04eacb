"""Topics of one door and its Home Assistant MQTT discovery configs.

Every topic of a door lives under ``edgeface/<device_id>/``. Discovery configs
go to ``<discovery_prefix>/<component>/edgeface_<device_id>/<object>/config``
(retained), one per entity, all tied to one Home Assistant device and to the
door's availability topic.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from . import __version__


@dataclass(frozen=True)
class Topics:
    """The MQTT topics of one door."""

    base: str

    @classmethod
    def for_device(cls, device_id: str) -> Topics:
        return cls(f"edgeface/{device_id}")

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def decision(self) -> str:
        return f"{self.base}/event"

    def event(self, kind: str) -> str:
        """Return the topic of an event: decisions on ``.../event``, other kinds on ``.../event/<kind>``."""
        return self.decision if kind == "decision" else f"{self.base}/event/{kind}"

    @property
    def door(self) -> str:
        return f"{self.base}/door"

    @property
    def contact(self) -> str:
        return f"{self.base}/contact"

    @property
    def last_person(self) -> str:
        return f"{self.base}/last_person"

    @property
    def unknown_present(self) -> str:
        return f"{self.base}/unknown_present"

    @property
    def camera_fault(self) -> str:
        return f"{self.base}/camera_fault"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def commands(self) -> str:
        return f"{self.base}/command/+"

    def command(self, name: str) -> str:
        return f"{self.base}/command/{name}"


def node_id(device_id: str) -> str:
    """Return the device id reduced to the characters allowed in a discovery topic."""
    return "edgeface_" + re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def discovery_messages(device_id: str, prefix: str, *, contact_wired: bool) -> list[tuple[str, str]]:
    """Return ``(topic, payload)`` for every discovery config of a door.

    :param contact_wired: a door contact is configured. When not, the contact
        entity's config is an empty payload, which removes the entity from
        Home Assistant if an earlier configuration had it.
    """
    topics = Topics.for_device(device_id)
    node = node_id(device_id)
    device = {
        "identifiers": [node],
        "name": f"edgeface {device_id}",
        "manufacturer": "edgeface",
        "model": "Face recognition door",
        "sw_version": __version__,
    }

    def entity(component: str, name: str, obj: str, **fields) -> tuple[str, str]:
        config = {
            "name": name,
            # No object_id: Home Assistant 2025.10 deprecated it, and without
            # it entity ids derive from the device and entity names.
            "unique_id": f"{node}_{obj}",
            "availability_topic": topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "qos": 1,
            **fields,
        }
        return f"{prefix}/{component}/{node}/{obj}/config", json.dumps(config, sort_keys=True)

    def health_sensor(name: str, obj: str, key: str, **fields) -> tuple[str, str]:
        return entity("sensor", name, obj, state_topic=topics.health,
                      value_template="{{ value_json.%s }}" % key, entity_category="diagnostic", **fields)

    messages = [
        # Home Assistant requires a command topic for a lock. edgeface never
        # acts on it, because an unsigned unlock would be a way in; it
        # records such commands as rejected.
        entity("lock", "Door", "door", state_topic=topics.door, command_topic=topics.command("lock"),
               state_locked="locked", state_unlocked="unlocked", payload_lock="LOCK", payload_unlock="UNLOCK",
               optimistic=False),
        entity("sensor", "Last recognised person", "last_person", state_topic=topics.last_person,
               value_template="{{ value_json.person }}", json_attributes_topic=topics.last_person, icon="mdi:account"),
        entity("binary_sensor", "Unknown face", "unknown_face", state_topic=topics.unknown_present,
               payload_on="ON", payload_off="OFF", device_class="occupancy", icon="mdi:account-question"),
        entity("binary_sensor", "Camera fault", "camera_fault", state_topic=topics.camera_fault,
               payload_on="ON", payload_off="OFF", device_class="problem", entity_category="diagnostic"),
        entity("event", "Access decision", "decision", state_topic=topics.decision,
               event_types=["granted", "denied"], icon="mdi:door"),
        health_sensor("Frames per second", "fps", "fps", unit_of_measurement="fps", state_class="measurement"),
        health_sensor("Gallery size", "gallery_size", "gallery_size", state_class="measurement"),
        health_sensor("Enrolled people", "people", "people", state_class="measurement"),
        health_sensor("Model", "model", "model"),
        health_sensor("Unpublished events", "outbox", "outbox_pending", state_class="measurement"),
    ]
    contact_topic = f"{prefix}/binary_sensor/{node}/door_contact/config"
    if contact_wired:
        messages.append(entity("binary_sensor", "Door contact", "door_contact", state_topic=topics.contact,
                               payload_on="open", payload_off="closed", device_class="door"))
    else:
        messages.append((contact_topic, ""))
    return messages
