"""The systemd notify protocol, spoken directly over ``$NOTIFY_SOCKET``.

systemd starts a ``Type=notify`` service with ``NOTIFY_SOCKET`` naming a
datagram socket (a path, or an abstract name starting with ``@``), and with
``WATCHDOG_USEC`` when the unit sets ``WatchdogSec``. The service sends
newline-separated ``KEY=value`` lines: ``READY=1`` when it is serving,
``STATUS=`` free text, ``WATCHDOG=1`` at least once per watchdog interval,
and ``STOPPING=1``. Outside systemd the variables are unset and every call
does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages; silent when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None, clock=time.monotonic) -> None:
        environ = os.environ if environ is None else environ
        self._clock = clock
        self._address: str | bytes | None = None
        self._socket: socket.socket | None = None
        address = environ.get("NOTIFY_SOCKET")
        if address:
            self._address = b"\0" + address[1:].encode() if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval: float | None = None
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6
        self._last_ping = float("-inf")

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; return False when not sent."""
        if self._socket is None:
            return False
        try:
            self._socket.sendto("\n".join(lines).encode("utf-8", "replace"), self._address)
            return True
        except OSError as error:
            log.warning("cannot notify systemd: %s", error)
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Ping the watchdog, at most twice per interval. Call it only while frames flow."""
        if self.watchdog_interval is None:
            return
        now = self._clock()
        if now - self._last_ping >= self.watchdog_interval / 2:
            if self.send("WATCHDOG=1"):
                self._last_ping = now

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
