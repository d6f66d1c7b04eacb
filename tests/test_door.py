"""The door relay on gpiozero's mock pins: off at start, pulses of the set length, off on every exit."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from edgeface.config import defaults
from edgeface.door import Door
from edgeface.errors import ConfigError

from conftest import on_intervals, wait_until


def settings(**changes):
    door = defaults()["door"]
    door.update({"unlock_seconds": 0.3, **changes})
    return door


def test_relay_starts_off_and_a_pulse_ends_off():
    factory = MockFactory()
    events = []
    door = Door(settings(), pin_factory=factory, listener=lambda kind, details: events.append((kind, details["state"])))
    pin = door.relay_pin
    assert pin.state is False
    door.pulse("test")
    assert pin.state is True
    assert door.unlocked
    wait_until(lambda: not door.unlocked)
    intervals, still_on = on_intervals(pin)
    assert not still_on
    assert len(intervals) == 1
    assert intervals[0][1] == pytest.approx(0.3, abs=0.15)
    assert events == [("door", "unlocked"), ("door", "locked")]
    door.close()


def test_active_low_relay_is_held_high_when_locked():
    factory = MockFactory()
    door = Door(settings(active_high=False), pin_factory=factory)
    pin = door.relay_pin
    assert pin.state is True  # inactive for an active-low module
    door.pulse("test")
    assert pin.state is False
    door.lock("test")
    assert pin.state is True
    door.close()


def test_lock_cuts_pulse_short():
    factory = MockFactory()
    door = Door(settings(unlock_seconds=30.0), pin_factory=factory)
    pin = door.relay_pin
    door.pulse("test")
    door.lock("signal")
    assert pin.state is False
    door.pulse("again")
    door.close()
    assert pin.state is False
    assert not door.unlocked
    door.pulse("after close")  # ignored, no error
    door.lock("after close")


def test_lock_from_another_thread_during_pulses():
    factory = MockFactory()
    door = Door(settings(unlock_seconds=0.05), pin_factory=factory)
    pin = door.relay_pin
    threads = [threading.Thread(target=lambda: [door.pulse("t") for _ in range(50)]) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    door.lock("end")
    assert pin.state is False
    time.sleep(0.1)  # a stray timer firing late must not switch it back on
    assert pin.state is False
    door.close()


def test_exit_button_pulses_and_contact_reports_forced_open():
    factory = MockFactory()
    events = []
    door = Door(settings(contact_pin=22, exit_button_pin=23, held_open_seconds=1.0), pin_factory=factory,
                listener=lambda kind, details: events.append(kind))
    relay = door.relay_pin
    contact = factory.pin(22)
    button = factory.pin(23)
    contact.drive_low()  # door closed
    assert door.contact == "closed"

    contact.drive_high()  # opened while locked: forced open
    wait_until(lambda: "forced_open" in events)
    assert door.contact == "open"
    wait_until(lambda: "held_open" in events)
    contact.drive_low()

    button.drive_low()  # exit button pressed
    wait_until(lambda: relay.state is True)
    button.drive_high()
    wait_until(lambda: relay.state is False)
    assert "exit_button" in events
    door.close()


def test_invalid_pin_claims_nothing():
    factory = MockFactory()
    with pytest.raises(ConfigError, match="relay_pin"):
        Door(settings(relay_pin="GPIO99"), pin_factory=factory)
    # The same pins are free again.
    door = Door(settings(), pin_factory=factory)
    door.close()
