"""The service's processes as the benchmark runs them (the wrapper is the tests'), and what they cost."""

from __future__ import annotations

import os
import secrets

from service_process import BIN, Process, Web, free_port, start_worker
from service_process import service_env as process_env

from .config import INSTANCE, PREFIX, BenchError

__all__ = ["BIN", "Process", "Web", "cpu_seconds", "free_port", "rss_mb", "service_env", "start_worker"]

_SECRET = secrets.token_hex(16)


def service_env(database_url: str, **overrides) -> dict[str, str]:
    """The environment of every service process; overrides are settings (KEY=value)."""
    # the per-caller inference limit would answer the load generators with 429
    defaults = {"SECRET_KEY": _SECRET, "RATE_LIMIT_PER_MINUTE": "0"}
    return process_env(database_url, INSTANCE, PREFIX, **{**defaults, **overrides})


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used, from /proc/PID/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def rss_mb(pid: int) -> float:
    """Resident set size from /proc/PID/status, in MB (MiB)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")
