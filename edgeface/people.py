"""Per-person access options: whether a person is disabled and when they may enter.

Options come from an optional ``person.yaml`` in the person's folder on the
enrolment stick, for example::

    disabled: false
    schedule:
      - days: [mon, tue, wed, thu, fri]
        from: "07:30"
        to: "18:00"
      - days: [sat]
        from: "22:00"
        to: "02:00"   # past midnight: Saturday 22:00 to Sunday 02:00

Times are the appliance's local time. A window whose ``to`` is earlier than
its ``from`` runs past midnight, and its ``days`` name the day it starts. A
window includes ``from`` and excludes ``to``. Without a schedule a person may
enter at any time. :func:`parse_options` validates the whole file before
anything is used, so a bad file is never half-applied.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import EdgefaceError

OPTIONS_FILE = "person.yaml"

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_MINUTES_PER_DAY = 24 * 60


class PersonOptionsError(EdgefaceError):
    """A ``person.yaml`` file is not valid YAML or has invalid options."""


@dataclass(frozen=True)
class Window:
    """One weekly time window: the days it starts on and its start and end in minutes after midnight."""

    days: tuple[int, ...]
    start: int
    end: int

    def contains(self, when: datetime.datetime) -> bool:
        """Return True when the local time ``when`` falls inside this window."""
        minute = when.hour * 60 + when.minute
        weekday = when.weekday()
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end

        # Past midnight: the evening part on a listed day, the morning part on the day after.
        yesterday = (weekday - 1) % 7
        return (weekday in self.days and minute >= self.start) or (yesterday in self.days and minute < self.end)

    def as_dict(self) -> dict[str, Any]:
        return {"days": [DAY_NAMES[d] for d in self.days], "from": _format_minutes(self.start), "to": _format_minutes(self.end)}


@dataclass(frozen=True)
class PersonOptions:
    """Access options of one enrolled person; the default is enabled at all times."""

    disabled: bool = False
    schedule: tuple[Window, ...] = field(default_factory=tuple)

    def access_allowed(self, when: datetime.datetime) -> tuple[bool, str]:
        """Return ``(True, "")`` when the person may enter at local time ``when``.

        Otherwise returns ``(False, "disabled")`` or ``(False, "schedule")``.
        """
        if self.disabled:
            return False, "disabled"
        if self.schedule and not any(window.contains(when) for window in self.schedule):
            return False, "schedule"
        return True, ""

    @property
    def is_default(self) -> bool:
        """True when the options allow access at all times."""
        return not self.disabled and not self.schedule

    def as_dict(self) -> dict[str, Any]:
        """Return the options in the ``person.yaml`` form, for the gallery file and reports."""
        return {"disabled": self.disabled, "schedule": [window.as_dict() for window in self.schedule]}

    @classmethod
    def from_dict(cls, data: Any, where: str = OPTIONS_FILE) -> PersonOptions:
        """Build options from parsed ``person.yaml`` data; raise :class:`PersonOptionsError` naming ``where``."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise PersonOptionsError(f"{where}: expected a mapping with 'disabled' and 'schedule', not {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in ("disabled", "schedule"))
        if unknown:
            raise PersonOptionsError(f"{where}: unknown option {', '.join(unknown)}; the options are 'disabled' and 'schedule'")

        disabled = data.get("disabled", False)
        if not isinstance(disabled, bool):
            raise PersonOptionsError(f"{where}: disabled must be true or false, not {disabled!r}")

        entries = data.get("schedule") or []
        if not isinstance(entries, list):
            raise PersonOptionsError(f"{where}: schedule must be a list of windows (days, from, to), not {type(entries).__name__}")
        windows = tuple(_parse_window(entry, f"{where}: schedule entry {number}") for number, entry in enumerate(entries, 1))
        return cls(disabled=disabled, schedule=windows)


DEFAULT_OPTIONS = PersonOptions()


def parse_options(text: str, where: str = OPTIONS_FILE) -> PersonOptions:
    """Parse the text of a ``person.yaml``; raise :class:`PersonOptionsError` when any part is invalid."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PersonOptionsError(f"{where} is not valid YAML: {error}") from error
    return PersonOptions.from_dict(data, where)


def _parse_window(entry: Any, where: str) -> Window:
    if not isinstance(entry, dict):
        raise PersonOptionsError(f"{where} must be a mapping with days, from and to, not {entry!r}")
    unknown = sorted(str(key) for key in entry if key not in ("days", "from", "to"))
    if unknown:
        raise PersonOptionsError(f"{where}: unknown key {', '.join(unknown)}; a window has days, from and to")
    missing = [key for key in ("days", "from", "to") if key not in entry]
    if missing:
        raise PersonOptionsError(f"{where}: missing {', '.join(missing)}")

    days = entry["days"]
    if isinstance(days, str):
        days = [days]
    if not isinstance(days, list) or not days:
        raise PersonOptionsError(f"{where}: days must be a list of day names such as [mon, tue], not {entry['days']!r}")
    numbers = []
    for day in days:
        name = day.strip().lower() if isinstance(day, str) else None
        if name in DAY_NAMES:
            numbers.append(DAY_NAMES.index(name))
        elif name in _FULL_DAY_NAMES:
            numbers.append(_FULL_DAY_NAMES.index(name))
        else:
            raise PersonOptionsError(f"{where}: unknown day {day!r}; use {', '.join(DAY_NAMES)}")

    start = _parse_time(entry["from"], f"{where}: from")
    end = _parse_time(entry["to"], f"{where}: to")
    if start == _MINUTES_PER_DAY:
        raise PersonOptionsError(f"{where}: from \"24:00\" is the end of a day; start the window at \"00:00\"")
    if start == end:
        raise PersonOptionsError(
            f"{where}: from and to are both {_format_minutes(start)}; for a whole day use from \"00:00\" to \"24:00\""
        )
    return Window(days=tuple(sorted(set(numbers))), start=start, end=end)


def _parse_time(value: Any, where: str) -> int:
    """Return minutes after midnight of an "HH:MM" string, 0..1440 ("24:00" ends a day)."""
    # YAML 1.1 reads an unquoted 07:30 as the sexagesimal integer 450.
    if isinstance(value, int) and not isinstance(value, bool):
        raise PersonOptionsError(f"{where} must be quoted, as in \"07:30\" (YAML reads an unquoted time as a number)")
    text = str(value).strip()
    hours, colon, minutes = text.partition(":")
    if not colon or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise PersonOptionsError(f"{where} must be a time as \"HH:MM\", not {value!r}")
    total = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or total > _MINUTES_PER_DAY:
        raise PersonOptionsError(f"{where} must be a time from \"00:00\" to \"24:00\", not {value!r}")
    return total


def _format_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
