"""Facts about the machine a benchmark runs on, read from /proc where Linux has it.

The benchmark scripts run as files import this as ``bench_machine``; the
``benchmarks.bench`` package modules import it relatively.
"""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """Return the CPU's model name from /proc/cpuinfo, or what ``platform`` reports elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def status_bytes(field: str) -> int:
    """Return a memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes, or 0 where it is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
