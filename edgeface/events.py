"""The local event log: every decision, door change and fault, in one SQLite file.

The log is also the MQTT outbox. :meth:`EventLog.record` stores an event and,
when the outbox is on, queues it for publication in the same transaction. The
MQTT bridge reads :meth:`EventLog.pending` and calls
:meth:`EventLog.mark_published` only once the broker has acknowledged an
event, so an outage or a crash loses no event unless the outbox overflows
(``outbox_max``).

Several threads and several processes (the door daemon and ``edgeface sync``)
may write to one file at the same time. The database runs in WAL mode with a
busy timeout, and every write is a short ``BEGIN IMMEDIATE`` transaction.

Recording never raises on a disk or database error, because the door loop must
go on. An event that cannot be written is logged, kept in memory (bounded) and
written with the next successful write. It stays available to
:meth:`EventLog.pending` meanwhile.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import EventLogError

log = logging.getLogger(__name__)

# The kinds edgeface records. Others are accepted if they match _KIND,
# because the kind becomes an MQTT topic level (edgeface/<id>/event/<kind>).
KINDS = ("decision", "door", "alert", "fault", "sync", "command", "system")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")

SCHEMA_VERSION = 1

# Events kept in memory while the database cannot be written, for example
# when the disk is full or another process holds a lock past the busy
# timeout. Beyond this many, the oldest are lost and counted as dropped.
UNSAVED_MAX = 1000

# Repeated database errors and outbox drops are logged at most this often.
WARNING_INTERVAL_SECONDS = 60.0

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_CREATE = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    thumbnail BLOB
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, seq);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL);
"""


@dataclass(frozen=True)
class Event:
    """One recorded event.

    ``seq`` is the row number in the database, increasing across every
    process that writes to it, or -1 while the event is held in memory because
    the database could not be written.
    """

    id: str
    seq: int
    time: float
    kind: str
    data: dict

    def as_message(self, device_id: str) -> dict:
        """Return the event as a JSON-ready dict for MQTT and other consumers.

        The keys ``id``, ``seq``, ``time`` (ISO 8601, UTC), ``device`` and
        ``kind`` come first. A data key with one of these names is renamed
        with a ``data_`` prefix (a fault's ``kind`` becomes ``data_kind``).
        """
        stamp = datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds")
        message = {"id": self.id, "seq": self.seq, "time": stamp, "device": device_id, "kind": self.kind}
        reserved = set(message)
        for key, value in self.data.items():
            message[f"data_{key}" if key in reserved else key] = value
        return message


class EventLog:
    """An SQLite event log with a bounded outbox for MQTT.

    :param path: the database file; its folder is created when missing.
    :param max_events: rows kept; beyond this the oldest rows (and their
        thumbnails) are deleted, and dropped from the outbox if still there.
    :param outbox_max: events kept for publication; when full, the oldest are
        dropped, counted in :meth:`dropped` and logged as a warning.
    :param outbox: queue recorded events for publication. Turn it off when
        MQTT is disabled, so that the outbox does not fill for nothing.
    :param busy_timeout: seconds a write waits for another process's write
        transaction before it fails (and the event is kept in memory).
    :raises EventLogError: the file cannot be created or opened, or was
        written by a newer edgeface. A corrupt file is renamed aside (with a
        ``.corrupt-<unix time>`` suffix) and a new log started, so that a
        damaged SD card does not keep the door from starting.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_events: int = 100_000,
        outbox_max: int = 10_000,
        outbox: bool = True,
        busy_timeout: float = 2.0,
    ) -> None:
        if max_events < 1 or outbox_max < 1:
            raise ValueError(f"max_events ({max_events}) and outbox_max ({outbox_max}) must be at least 1")
        self.path = Path(path)
        self.max_events = max_events
        self.outbox_max = outbox_max
        self.outbox = outbox
        self._busy_timeout = busy_timeout
        # Guards the in-memory state below, never a database call, so that
        # a thread waiting for the database does not hold up the others.
        self._lock = threading.Lock()
        self._unsaved: collections.deque[Event] = collections.deque()
        self._unsaved_lost = 0
        self._dropped_fallback = 0
        self._last_warning: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        # One connection per thread, so that SQLite itself (WAL, busy
        # timeout) arbitrates between the door loop and the MQTT publisher.
        self._connections: dict[int, sqlite3.Connection] = {}
        self._closed = False
        self._connections[threading.get_ident()] = self._open()

    @classmethod
    def from_config(cls, config: dict) -> EventLog:
        """Open the event log of a validated configuration, with an outbox only when MQTT is enabled."""
        return cls(
            config["events"]["database"],
            max_events=config["events"]["max_events"],
            outbox_max=config["mqtt"]["outbox_max"],
            outbox=config["mqtt"]["enabled"],
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"unsaved={len(self._unsaved)}"
        return f"<EventLog {str(self.path)!r} max_events={self.max_events} outbox_max={self.outbox_max} {state}>"

    # -- opening ---------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise EventLogError(
                f"cannot create the folder of event log {self.path}: {error.strerror}; "
                "set events.database to a writable path"
            ) from error

        try:
            return self._connect()
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorcode", None) not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise EventLogError(
                    f"cannot open event log {self.path}: {error}; "
                    "check that events.database is a writable file and not in use by another program"
                ) from error

        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        log.error("event log %s is corrupt; moved it to %s and started a new log", self.path, aside)
        try:
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                sidecar = self.path.with_name(self.path.name + suffix)
                if sidecar.exists():
                    sidecar.rename(aside.with_name(aside.name + suffix))
            return self._connect()
        except (OSError, sqlite3.DatabaseError) as error:
            raise EventLogError(f"event log {self.path} is corrupt and cannot be replaced: {error}") from error

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL syncs the WAL on every commit (one fsync per write), so
            # recorded events survive a power cut if the storage honours fsync.
            connection.execute("PRAGMA synchronous=FULL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                connection.close()
                raise EventLogError(
                    f"event log {self.path} has schema version {version}, newer than this edgeface "
                    f"({SCHEMA_VERSION}); upgrade edgeface or set events.database to another file"
                )
            connection.executescript(_CREATE)
            if version < SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError:
            connection.close()
            raise
        return connection

    # -- writing ---------------------------------------------------------

    def record(self, kind: str, data: dict, *, thumbnail: bytes | None = None) -> Event:
        """Store an event and queue it for publication; return it.

        Safe from any thread and process. Never raises on a disk or database
        error: the error is logged and the event kept in memory until the
        next successful write.

        :param kind: one of ``KINDS``, or another name of lowercase letters,
            digits and underscores (at most 32), else ValueError.
        :param data: JSON-serialisable values. NumPy scalars are converted,
            other objects are stored as their ``str()``.
        :param thumbnail: JPEG bytes of the face, stored with the row.
        """
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise ValueError(f"invalid event kind {kind!r}: use lowercase letters, digits and _, such as {', '.join(KINDS)}")
        text = json.dumps(_strip_nan(data), default=json_default)
        event = Event(id=uuid.uuid4().hex, seq=-1, time=time.time(), kind=kind, data=json.loads(text))

        with self._lock:
            backlog = list(self._unsaved)
        try:
            connection = self._require_connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                self._write_backlog(connection, backlog)
                seq = self._insert(connection, event, text, thumbnail)
                self._trim(connection, seq)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            with self._lock:
                self._keep_unsaved(event)
                unsaved = len(self._unsaved)
            self._warn("write", "cannot write event %s (%s) to %s: %s; kept in memory (%d unsaved)",
                       event.id, kind, self.path, error, unsaved)
            return event

        self._forget_backlog(backlog)
        return Event(id=event.id, seq=seq, time=event.time, kind=kind, data=event.data)

    def _insert(self, connection: sqlite3.Connection, event: Event, text: str, thumbnail: bytes | None) -> int:
        cursor = connection.execute(
            "INSERT INTO events (id, time, kind, data, thumbnail) VALUES (?, ?, ?, ?, ?)",
            (event.id, event.time, event.kind, text, thumbnail),
        )
        seq = cursor.lastrowid
        if self.outbox:
            connection.execute("INSERT INTO outbox (seq) VALUES (?)", (seq,))
        return seq

    def _write_backlog(self, connection: sqlite3.Connection, backlog: list[Event]) -> None:
        # Events that failed earlier go in first, so the log keeps their order.
        # Another thread may have written them meanwhile, hence OR IGNORE.
        for event in backlog:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO events (id, time, kind, data) VALUES (?, ?, ?, ?)",
                (event.id, event.time, event.kind, json.dumps(event.data)),
            )
            if cursor.rowcount == 1 and self.outbox:
                connection.execute("INSERT INTO outbox (seq) VALUES (?)", (cursor.lastrowid,))

    def _forget_backlog(self, backlog: list[Event]) -> None:
        if not backlog:
            return
        written = {event.id for event in backlog}
        with self._lock:
            self._unsaved = collections.deque(e for e in self._unsaved if e.id not in written)

    def _keep_unsaved(self, event: Event) -> None:
        if len(self._unsaved) >= UNSAVED_MAX:
            self._unsaved.popleft()
            self._unsaved_lost += 1
            self._dropped_fallback += 1
        self._unsaved.append(event)

    def _trim(self, connection: sqlite3.Connection, last_seq: int) -> None:
        # Rows are only ever deleted from the old end, so seq values are
        # contiguous and "seq <= last - max_events" keeps exactly max_events.
        cutoff = last_seq - self.max_events
        dropped = 0
        if cutoff > 0:
            dropped += connection.execute("DELETE FROM outbox WHERE seq <= ?", (cutoff,)).rowcount
            connection.execute("DELETE FROM events WHERE seq <= ?", (cutoff,))

        count = connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        if count > self.outbox_max:
            excess = count - self.outbox_max
            connection.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (excess,)
            )
            dropped += excess

        if dropped:
            connection.execute(
                "INSERT INTO counters (name, value) VALUES ('outbox_dropped', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (dropped,),
            )
            self._warn("drop", "MQTT outbox full (outbox_max=%d): dropped %d oldest unpublished events", self.outbox_max, dropped)

    # -- outbox ----------------------------------------------------------

    def pending(self, limit: int = 100) -> list[Event]:
        """Return up to ``limit`` unpublished events, oldest first.

        Events held in memory after a write error come last. Never raises on
        a database error: only the events held in memory are returned then.
        """
        with self._lock:
            backlog = list(self._unsaved)
        try:
            connection = self._require_connection()
            if backlog:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    self._write_backlog(connection, backlog)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                self._forget_backlog(backlog)
            rows = connection.execute(
                "SELECT e.id, e.seq, e.time, e.kind, e.data FROM outbox o JOIN events e ON e.seq = o.seq "
                "ORDER BY o.seq LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as error:
            self._warn("read", "cannot read the outbox of %s: %s", self.path, error)
            with self._lock:
                return list(self._unsaved)[:limit]

        events = [_row_to_event(row) for row in rows]
        with self._lock:
            unsaved = list(self._unsaved)
        return events + unsaved[: max(0, limit - len(events))]

    def mark_published(self, ids: list[str]) -> None:
        """Remove events from the outbox once the broker has acknowledged them.

        Never raises: on a database error the events stay pending and are
        published again later, which subscribers absorb by deduplicating ``id``.
        """
        if not ids:
            return
        published = set(ids)
        with self._lock:
            self._unsaved = collections.deque(e for e in self._unsaved if e.id not in published)
        try:
            connection = self._require_connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    connection.execute(
                        f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM events WHERE id IN ({marks}))", chunk
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            self._warn("mark", "cannot mark %d events published in %s: %s; they will be sent again",
                       len(ids), self.path, error)

    def outbox_size(self) -> int:
        """Return the number of unpublished events (-1 when the database cannot be read)."""
        try:
            count = self._require_connection().execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except sqlite3.Error as error:
            self._warn("read", "cannot read the outbox of %s: %s", self.path, error)
            return -1
        return count + len(self._unsaved)

    def dropped(self) -> int:
        """Return the number of outbox entries dropped because the outbox was full.

        The count is stored in the database, so it covers every process and
        survives restarts. Events lost from memory after write errors add to it.
        """
        try:
            row = self._require_connection().execute("SELECT value FROM counters WHERE name = 'outbox_dropped'").fetchone()
        except sqlite3.Error as error:
            self._warn("read", "cannot read the drop counter of %s: %s", self.path, error)
            return self._dropped_fallback
        return (row[0] if row else 0) + self._unsaved_lost

    # -- reading ---------------------------------------------------------

    def recent(self, limit: int = 50, kind: str | None = None) -> list[Event]:
        """Return the latest ``limit`` stored events, newest first, optionally of one kind.

        :raises EventLogError: the database cannot be read.
        """
        try:
            connection = self._require_connection()
            if kind is None:
                rows = connection.execute(
                    "SELECT id, seq, time, kind, data FROM events ORDER BY seq DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = connection.execute(
                    "SELECT id, seq, time, kind, data FROM events WHERE kind = ? ORDER BY seq DESC LIMIT ?",
                    (kind, limit),
                ).fetchall()
        except sqlite3.Error as error:
            raise EventLogError(f"cannot read event log {self.path}: {error}") from error
        return [_row_to_event(row) for row in rows]

    def thumbnail(self, event_id: str) -> bytes | None:
        """Return the thumbnail stored with an event, or None when it has none or is gone.

        :raises EventLogError: the database cannot be read.
        """
        try:
            row = self._require_connection().execute("SELECT thumbnail FROM events WHERE id = ?", (event_id,)).fetchone()
        except sqlite3.Error as error:
            raise EventLogError(f"cannot read event log {self.path}: {error}") from error
        return None if row is None else row[0]

    # -- command nonces --------------------------------------------------

    def remember_nonce(self, nonce: str, expires: float) -> bool:
        """Store a command nonce until ``expires`` (unix time); return False when it was already stored.

        Expired nonces are deleted first. Used by remote commands to reject
        replays, across restarts and across processes.

        :raises EventLogError: the database cannot be written, so a replay
            cannot be ruled out; the caller must reject the command.
        """
        try:
            connection = self._require_connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("DELETE FROM nonces WHERE expires < ?", (time.time(),))
                cursor = connection.execute("INSERT OR IGNORE INTO nonces (nonce, expires) VALUES (?, ?)", (nonce, expires))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            raise EventLogError(f"cannot store a command nonce in {self.path}: {error}") from error
        return cursor.rowcount == 1

    # -- housekeeping ----------------------------------------------------

    def close(self) -> None:
        """Close the database. Events still held in memory are written first if possible."""
        if self._closed:
            return
        if self._unsaved:
            self.pending(limit=0)
        if self._unsaved:
            log.error("closing event log %s with %d events that could not be written", self.path, len(self._unsaved))
        self._closed = True
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_connection(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use."""
        if self._closed:
            raise sqlite3.ProgrammingError("the event log is closed")
        thread = threading.get_ident()
        connection = self._connections.get(thread)
        if connection is None:
            connection = self._connect()
            with self._lock:
                self._connections[thread] = connection
        return connection

    def _warn(self, topic: str, message: str, *args: Any) -> None:
        """Log a warning, at most once per interval for each topic, counting the rest."""
        with self._lock:
            message, args = self._rate_limit(topic, message, args)
        if message is not None:
            log.warning(message, *args)

    def _rate_limit(self, topic: str, message: str, args: tuple) -> tuple[str | None, tuple]:
        now = time.monotonic()
        last = self._last_warning.get(topic)
        if last is not None and now - last < WARNING_INTERVAL_SECONDS:
            self._suppressed[topic] = self._suppressed.get(topic, 0) + 1
            return None, args
        suppressed = self._suppressed.pop(topic, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._last_warning[topic] = now
        return message, args


def _row_to_event(row: tuple) -> Event:
    event_id, seq, stamp, kind, text = row
    return Event(id=event_id, seq=seq, time=stamp, kind=kind, data=json.loads(text))


def json_default(value: Any) -> Any:
    """Convert a value that ``json.dumps`` cannot encode: NumPy scalars to numbers, anything else to ``str()``."""
    item = getattr(value, "item", None)
    if callable(item):
        result = item()
        if isinstance(result, float) and not math.isfinite(result):
            return None
        return result
    return str(value)


def _strip_nan(value: Any) -> Any:
    # JSON has no NaN or infinity; such values are stored as null.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strip_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strip_nan(v) for v in value]
    return value
