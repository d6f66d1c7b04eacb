"""Time the event log's record() and the MQTT outbox's throughput.

Prints the median, 95th percentile and maximum milliseconds of
``EventLog.record()`` (one fsync per write, see events.py), which the door
loop pays for every decision. With ``--port`` it also starts an MQTT bridge
against that broker and prints how many events per second go from the
outbox to a broker acknowledgement. With ``--mosquitto`` it starts a
temporary mosquitto on a free loopback port for that.

Run from the repository root::

    .venv/bin/python benchmarks/event_log_speed.py [--events 500] [--folder DIR] [--mosquitto]

``--folder`` puts the database on the storage to measure (the SD card on a
Pi); the default is a temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from edgeface.config import defaults
from edgeface.events import EventLog
from edgeface.mqtt import MqttBridge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500, help="decisions to record (default: 500)")
    parser.add_argument("--folder", type=Path, help="folder for the database (default: a temporary folder)")
    parser.add_argument("--port", type=int, help="port of an MQTT broker on 127.0.0.1 to publish to")
    parser.add_argument("--mosquitto", action="store_true", help="start a temporary mosquitto on a free port")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        database = folder / f"benchmark-{int(time.time())}.db"
        broker = None
        port = args.port
        if args.mosquitto:
            broker, port = start_mosquitto(Path(scratch))
        try:
            run(database, args.events, port)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait()
            if args.folder:
                for path in folder.glob(database.name + "*"):
                    path.unlink()


def run(database: Path, count: int, port: int | None) -> None:
    print(f"{platform.machine()} {platform.python_version()} database={database}")
    data = {"person": "ana", "granted": True, "reason": "granted", "votes": 3, "distance": 0.31,
            "track": 1, "frames": 3}

    with EventLog(database) as events:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            events.record("decision", data)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        print(f"record(): {count} events, median {statistics.median(times):.2f} ms, "
              f"p95 {times[int(0.95 * (count - 1))]:.2f} ms, max {times[-1]:.2f} ms")

        if port is None:
            return
        config = defaults()
        config["mqtt"].update(enabled=True, host="127.0.0.1", port=port, device_id="benchmark")
        bridge = MqttBridge(config, events, on_unlock=lambda r: None, on_reload=lambda: None, on_sync=lambda: None)
        start = time.perf_counter()
        bridge.start()
        while events.outbox_size() > 0 and time.perf_counter() - start < 120:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        remaining = events.outbox_size()
        bridge.stop()
        print(f"outbox: {count - remaining} events acknowledged in {elapsed:.2f} s "
              f"({(count - remaining) / elapsed:.0f} events/s, including the connection), {remaining} left")


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n", encoding="utf-8")
    process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise SystemExit(f"mosquitto did not start on port {port}")


if __name__ == "__main__":
    main()
