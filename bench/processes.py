"""The service as it runs in production: gunicorn web workers and a `flask worker` process."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from .config import INSTANCE, PREFIX, ROOT, BenchError

BIN = Path(sys.executable).parent
_SECRET = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(database_url: str, **overrides) -> dict[str, str]:
    """The environment of every service process; overrides are settings (KEY=value)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "INSTANCE_NAME": INSTANCE,
            "CONTAINER_PREFIX": PREFIX,
            "RUN_BACKGROUND": "worker",
            "STOP_TIMEOUT_SECONDS": "1",
            "FLASK_APP": "wsgi",
            "EXAMPLE_MODEL": "false",
            "SECRET_KEY": _SECRET,
            # the per-caller inference limit would answer the load generators with 429
            "RATE_LIMIT_PER_MINUTE": "0",
        }
    )
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return env


class Process:
    """A child in its own process group, so a signal reaches all of it (gunicorn and its workers)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after 30 s; waits for the exit."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=30)
            except ProcessLookupError:
                pass
        self._log.close()

    def children(self) -> list[int]:
        """Pids whose parent is this process (gunicorn's workers)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                found.append(int(entry))
        return sorted(found)


class Web:
    """gunicorn with its workers, on a free port of 127.0.0.1."""

    def __init__(self, env: dict[str, str], log: Path, workers: int):
        self.port = free_port()
        self.workers = workers
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**env, "PORT": str(self.port), "WEB_CONCURRENCY": str(workers)}
        self.process = Process([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], env, log)
        self._wait_up()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if len(self.process.children()) >= self.workers:
                try:
                    if all(requests.get(f"{self.base}/healthz", timeout=5).ok for _ in range(4 * self.workers)):
                        return
                except requests.RequestException:
                    pass
            if not self.process.alive() or time.monotonic() > deadline:
                raise BenchError(f"gunicorn did not come up; see {self.process.log_path}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        return self.process.children()

    def stop(self) -> None:
        self.process.stop()


def start_worker(env: dict[str, str], log: Path) -> Process:
    """The background role: idle shutdown, reconciliation and the Kafka listener."""
    return Process([str(BIN / "flask"), "worker"], env, log)


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
