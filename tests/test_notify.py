"""The systemd notify protocol against a real datagram socket."""

from __future__ import annotations

import os
import socket

from edgeface.notify import Notifier


def listen(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2.0)
    return server


def test_ready_status_and_rate_limited_watchdog(tmp_path):
    path = str(tmp_path / "notify")
    server = listen(path)
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}, clock=lambda: now[0])
    assert notifier.enabled and notifier.watchdog_interval == 4.0

    notifier.ready("watching")
    assert server.recv(4096) == b"READY=1\nSTATUS=watching"

    notifier.watchdog()
    notifier.watchdog()  # within half the interval: not sent
    now[0] += 2.0
    notifier.watchdog()
    notifier.stopping()
    messages = [server.recv(4096) for _ in range(3)]
    assert messages == [b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]
    notifier.close()
    server.close()


def test_abstract_socket_name():
    name = f"edgeface-test-{os.getpid()}"
    server = listen("\0" + name)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
    notifier.status("hello")
    assert server.recv(4096) == b"STATUS=hello"
    server.close()


def test_silent_outside_systemd_and_for_another_pid():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.send("READY=1") is False
    notifier.watchdog()
    other = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
