"""The SQLite event log and its MQTT outbox."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from edgeface.errors import EventLogError
from edgeface.events import EventLog

ROOT = Path(__file__).resolve().parents[1]


def decision(person="ana", granted=True, track=1):
    return {"person": person, "granted": granted, "reason": "granted" if granted else "unknown",
            "votes": 3, "distance": 0.31, "track": track, "frames": 3}


def test_record_round_trip(tmp_path):
    with EventLog(tmp_path / "events.db") as events:
        first = events.record("decision", decision())
        second = events.record("door", {"state": "unlocked", "contact": None, "cause": "grant"})

        assert len(first.id) == 32
        assert first.id != second.id
        assert second.seq > first.seq > 0
        assert [e.id for e in events.recent()] == [second.id, first.id]
        assert [e.id for e in events.recent(kind="door")] == [second.id]
        assert events.recent()[1].data == decision()


def test_message_has_standard_keys(tmp_path):
    with EventLog(tmp_path / "events.db") as events:
        event = events.record("decision", decision(person=None, granted=False))
    message = event.as_message("front")

    assert message["id"] == event.id
    assert message["device"] == "front"
    assert message["kind"] == "decision"
    assert message["person"] is None
    assert message["granted"] is False
    parsed = datetime.fromisoformat(message["time"])
    assert parsed.utcoffset().total_seconds() == 0
    assert parsed.timestamp() == pytest.approx(event.time, abs=0.001)


def test_message_renames_colliding_data_keys(tmp_path):
    with EventLog(tmp_path / "events.db") as events:
        event = events.record("fault", {"id": "spoofed", "device": "other", "kind": "frozen", "note": "x"})
    message = event.as_message("front")
    assert message["id"] == event.id
    assert message["device"] == "front"
    assert message["kind"] == "fault"
    assert message["data_kind"] == "frozen"
    assert message["data_id"] == "spoofed"
    assert message["note"] == "x"


def test_numpy_and_nan_values_stored(tmp_path):
    with EventLog(tmp_path / "events.db") as events:
        events.record("decision", {"distance": np.float32(0.25), "votes": np.int64(3), "other": float("nan")})
        stored = events.recent()[0].data
    assert stored["distance"] == pytest.approx(0.25)
    assert stored["votes"] == 3
    assert stored["other"] is None


def test_kind_must_be_topic_safe(tmp_path):
    with EventLog(tmp_path / "events.db") as events:
        assert events.record("alert", {"event": "held_open"}).seq > 0
        assert events.record("door_bell", {}).seq > 0
        for bad in ("door/bell", "+", "#", "", "Door", "x" * 40):
            with pytest.raises(ValueError, match="invalid event kind"):
                events.record(bad, {})


def test_outbox_oldest_first_until_published(tmp_path):
    with EventLog(tmp_path / "events.db") as events:
        recorded = [events.record("decision", decision(track=i)) for i in range(5)]

        assert [e.id for e in events.pending()] == [e.id for e in recorded]
        assert [e.id for e in events.pending(limit=2)] == [e.id for e in recorded[:2]]

        events.mark_published([recorded[0].id, recorded[2].id])
        assert [e.id for e in events.pending()] == [recorded[1].id, recorded[3].id, recorded[4].id]
        assert events.outbox_size() == 3
        assert len(events.recent()) == 5


def test_outbox_off_queues_nothing(tmp_path):
    with EventLog(tmp_path / "events.db", outbox=False) as events:
        events.record("decision", decision())
        assert events.pending() == []
        assert len(events.recent()) == 1


def test_full_outbox_drops_oldest_with_warning(tmp_path, caplog):
    with EventLog(tmp_path / "events.db", outbox_max=5) as events:
        with caplog.at_level(logging.WARNING, logger="edgeface.events"):
            recorded = [events.record("decision", decision(track=i)) for i in range(8)]

        assert [e.id for e in events.pending()] == [e.id for e in recorded[3:]]
        assert events.dropped() == 3
        assert "outbox full" in caplog.text
        # The rows stay in the log; only their publication was given up.
        assert len(events.recent(limit=100)) == 8


def test_max_events_deletes_oldest_rows(tmp_path):
    with EventLog(tmp_path / "events.db", max_events=10, outbox_max=100) as events:
        recorded = [events.record("decision", decision(track=i), thumbnail=b"jpeg%d" % i) for i in range(15)]

        remaining = events.recent(limit=100)
        assert [e.id for e in remaining] == [e.id for e in reversed(recorded[5:])]
        assert events.thumbnail(recorded[0].id) is None
        assert events.thumbnail(recorded[14].id) == b"jpeg14"
        # Unpublished rows that were deleted count as dropped from the outbox.
        assert events.dropped() == 5
        assert [e.id for e in events.pending()] == [e.id for e in recorded[5:]]


def test_outbox_survives_reopen(tmp_path):
    path = tmp_path / "events.db"
    with EventLog(path) as events:
        recorded = [events.record("decision", decision(track=i)) for i in range(3)]
        events.mark_published([recorded[0].id])

    with EventLog(path) as events:
        assert [e.id for e in events.pending()] == [recorded[1].id, recorded[2].id]
        later = events.record("decision", decision(track=9))
        assert later.seq > recorded[2].seq


def test_writes_from_several_processes(tmp_path):
    path = tmp_path / "events.db"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from edgeface.events import EventLog
        events = EventLog({str(path)!r}, busy_timeout=10.0)
        for i in range(150):
            event = events.record("sync", {{"writer": sys.argv[1], "n": i}})
            assert event.seq > 0, "write failed"
        events.close()
        """
    )
    with EventLog(path, busy_timeout=10.0) as events:
        writers = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("a", "b")]
        mine = [events.record("decision", decision(track=i)) for i in range(150)]
        codes = [writer.wait(timeout=120) for writer in writers]

        assert codes == [0, 0]
        assert all(event.seq > 0 for event in mine)
        stored = events.recent(limit=1000)
        assert len(stored) == 450
        assert len({e.id for e in stored}) == 450
        assert len({e.seq for e in stored}) == 450
        for name in ("a", "b"):
            numbers = [e.data["n"] for e in reversed(stored) if e.data.get("writer") == name]
            assert numbers == list(range(150))
        assert events.outbox_size() == 450


def test_writes_from_several_threads(tmp_path):
    import threading

    with EventLog(tmp_path / "events.db", busy_timeout=10.0) as events:
        stored = []

        def write(writer):
            for i in range(100):
                stored.append(events.record("decision", {"writer": writer, "n": i}))

        def publish():
            published = 0
            while published < 400:
                batch = events.pending(limit=50)
                events.mark_published([e.id for e in batch])
                published += len(batch)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        publisher = threading.Thread(target=publish)
        for thread in (*threads, publisher):
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        publisher.join(timeout=120)

        assert not publisher.is_alive()
        assert all(event.seq > 0 for event in stored)
        assert len({event.seq for event in stored}) == 400
        assert events.outbox_size() == 0
        assert len(events.recent(limit=1000)) == 400


def test_locked_database_keeps_event_in_memory(tmp_path, caplog):
    path = tmp_path / "events.db"
    events = EventLog(path, busy_timeout=0.1)
    first = events.record("decision", decision(track=1))

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.WARNING, logger="edgeface.events"):
        unsaved = events.record("decision", decision(track=2))
    assert unsaved.seq == -1
    assert "kept in memory" in caplog.text
    # Still offered for publication while the database is locked.
    assert [e.id for e in events.pending()] == [unsaved.id]

    blocker.execute("ROLLBACK")
    blocker.close()
    third = events.record("decision", decision(track=3))
    assert third.seq > 0
    assert [e.id for e in events.pending()] == [first.id, unsaved.id, third.id]
    assert [e.data["track"] for e in reversed(events.recent())] == [1, 2, 3]
    events.close()


def test_corrupt_file_moved_aside(tmp_path, caplog):
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    with caplog.at_level(logging.ERROR, logger="edgeface.events"):
        with EventLog(path) as events:
            events.record("system", {"note": "fresh"})
            assert len(events.recent()) == 1
    aside = list(tmp_path.glob("events.db.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not")
    assert "corrupt" in caplog.text


def test_unwritable_folder_raises_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EventLogError, match="events.database"):
        EventLog(blocker / "sub" / "events.db")


def test_newer_schema_rejected(tmp_path):
    path = tmp_path / "events.db"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version=99")
    connection.close()
    with pytest.raises(EventLogError, match="newer"):
        EventLog(path)


def test_nonce_remembered_until_expiry(tmp_path):
    import time

    path = tmp_path / "events.db"
    with EventLog(path) as events:
        assert events.remember_nonce("ab12", time.time() + 60) is True
        assert events.remember_nonce("ab12", time.time() + 60) is False
        assert events.remember_nonce("expired", time.time() - 1) is True
        assert events.remember_nonce("expired", time.time() + 60) is True

    # Remembered across a restart, so a replay after a restart fails too.
    with EventLog(path) as events:
        assert events.remember_nonce("ab12", time.time() + 60) is False
