"""The door: a relay pulsed through gpiozero, and optional contact and exit-button inputs.

The relay is off unless a pulse is running. It is forced off when the door
is created, at the end of every pulse, by :meth:`Door.lock` (which every
error path and shutdown calls) and by :meth:`Door.close`.

After the process exits, gpiozero releases the pin and it floats. Wire the
relay module so that a floating input leaves it off: a pull-down resistor
for a module energised by a high input, a pull-up for one energised by a
low input. ``docs/daemon.md`` shows how.

The door contact and the exit button connect their pin to ground when
closed or pressed, and use the Pi's internal pull-up resistor.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from .errors import ConfigError

log = logging.getLogger(__name__)

#: Called as ``listener(kind, details)``; kind is "door", "held_open",
#: "forced_open" or "exit_button".
DoorListener = Callable[[str, dict[str, Any]], None]


class Door:
    """The door relay with its optional inputs.

    :param settings: the ``door`` section of the config.
    :param pin_factory: a gpiozero pin factory; ``None`` uses gpiozero's
        default, or a :class:`~gpiozero.pins.mock.MockFactory` when
        ``door.simulate`` is true.
    :param listener: called on every change of the relay and the contact.
    """

    def __init__(self, settings: dict, *, pin_factory: Any = None, listener: DoorListener | None = None) -> None:
        try:
            from gpiozero import Button, OutputDevice
        except ImportError as error:  # pragma: no cover - gpiozero is a dependency
            raise ConfigError("gpiozero is not installed: pip install gpiozero") from error
        if pin_factory is None and settings["simulate"]:
            from gpiozero.pins.mock import MockFactory

            pin_factory = MockFactory()
        self.unlock_seconds = float(settings["unlock_seconds"])
        self.held_open_seconds = float(settings["held_open_seconds"])
        self._listener = listener or (lambda kind, details: None)
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._held_timer: threading.Timer | None = None
        self._last_pulse_end = 0.0
        self._closed = False
        self._contact = self._button = None
        try:
            self._relay = OutputDevice(
                _pin(settings["relay_pin"]),
                active_high=settings["active_high"],
                initial_value=False,
                pin_factory=pin_factory,
            )
            self._relay.off()
            self._relay_pin = self._relay.pin
            if settings["contact_pin"] is not None:
                self._contact = Button(_pin(settings["contact_pin"]), pull_up=True, bounce_time=0.05, pin_factory=pin_factory)
                self._contact.when_released = self._contact_opened
                self._contact.when_pressed = self._contact_closed
            if settings["exit_button_pin"] is not None:
                self._button = Button(_pin(settings["exit_button_pin"]), pull_up=True, bounce_time=0.05, pin_factory=pin_factory)
                self._button.when_pressed = self._exit_pressed
        except Exception as error:
            self.close()
            raise ConfigError(f"cannot set up the door pins: {error}. Check door.relay_pin, door.contact_pin and door.exit_button_pin, and that this user may use GPIO (group gpio)") from error

    @property
    def relay_pin(self) -> Any:
        """The gpiozero pin object of the relay (a MockPin when simulated), kept after :meth:`close`."""
        return self._relay_pin

    @property
    def unlocked(self) -> bool:
        """True while the relay is energised (False once the door is closed)."""
        return not self._closed and self._relay_is_on()

    @property
    def contact(self) -> str | None:
        """``"open"``, ``"closed"``, or ``None`` when no contact is wired."""
        if self._contact is None:
            return None
        return "closed" if self._contact.is_pressed else "open"

    def pulse(self, cause: str, seconds: float | None = None) -> None:
        """Energise the relay for ``seconds`` (default ``door.unlock_seconds``), then release it."""
        seconds = self.unlock_seconds if seconds is None else seconds
        with self._lock:
            if self._closed:
                return
            self._cancel_timer()
            try:
                self._relay.on()
            except Exception:
                log.exception("relay failed to switch on; forcing it off")
                self.lock("relay_error")
                raise
            self._timer = threading.Timer(seconds, self._end_pulse)
            self._timer.daemon = True
            self._timer.start()
        log.info("door unlocked for %.1f s (%s)", seconds, cause)
        self._notify("door", {"state": "unlocked", "contact": self.contact, "cause": cause})

    def lock(self, cause: str = "lock") -> None:
        """Release the relay now. Safe to call at any time, from any thread, any number of times."""
        with self._lock:
            self._cancel_timer()
            was_on = self._relay_is_on()
            try:
                self._relay.off()
            except Exception:  # pragma: no cover - nothing more can be done; the pin floats off on exit
                log.exception("relay failed to switch off")
        if was_on:
            self._last_pulse_end = time.monotonic()
            log.info("door locked (%s)", cause)
            self._notify("door", {"state": "locked", "contact": self.contact, "cause": cause})

    def close(self) -> None:
        """Lock the door and release the pins."""
        relay = getattr(self, "_relay", None)
        if relay is not None:
            self.lock("shutdown")
        with self._lock:
            self._closed = True
            if self._held_timer is not None:
                self._held_timer.cancel()
            for device in (self._button, self._contact, relay):
                if device is not None:
                    try:
                        device.close()
                    except Exception:  # pragma: no cover
                        log.exception("closing a GPIO device failed")

    def _end_pulse(self) -> None:
        self.lock("pulse_end")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _relay_is_on(self) -> bool:
        try:
            return bool(self._relay.value)
        except Exception:
            # A closed device has released its pin; an unreadable one is
            # treated as on so that lock() still tries to switch it off.
            return not self._closed

    def _contact_opened(self) -> None:
        recently = time.monotonic() - self._last_pulse_end < 2.0
        if not self._relay_is_on() and not recently:
            log.warning("door forced open: the contact opened while the door was locked")
            self._notify("forced_open", {"contact": "open"})
        with self._lock:
            if self._held_timer is not None:
                self._held_timer.cancel()
            self._held_timer = threading.Timer(self.held_open_seconds, self._held_open)
            self._held_timer.daemon = True
            self._held_timer.start()
        self._notify("door", {"state": "unlocked" if self._relay_is_on() else "locked", "contact": "open", "cause": "contact"})

    def _contact_closed(self) -> None:
        with self._lock:
            if self._held_timer is not None:
                self._held_timer.cancel()
                self._held_timer = None
        self._notify("door", {"state": "unlocked" if self._relay_is_on() else "locked", "contact": "closed", "cause": "contact"})

    def _held_open(self) -> None:
        if self.contact == "open":
            log.warning("door held open for more than %.0f s", self.held_open_seconds)
            self._notify("held_open", {"contact": "open", "seconds": self.held_open_seconds})

    def _exit_pressed(self) -> None:
        self._notify("exit_button", {})
        self.pulse("exit_button")

    def _notify(self, kind: str, details: dict[str, Any]) -> None:
        try:
            self._listener(kind, details)
        except Exception:
            log.exception("door listener failed")


def _pin(value: int | str) -> int | str:
    """Accept 17, "17", "GPIO17" or "BOARD11" as gpiozero does."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value
