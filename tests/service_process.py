"""The service as it runs in production: gunicorn web workers and `flask worker` processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from conftest import BASE_SETTINGS, INSTANCE, PG_URL

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(**overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.update(
        {
            "DATABASE_URL": PG_URL,
            "INSTANCE_NAME": INSTANCE,
            "CONTAINER_PREFIX": BASE_SETTINGS["container_prefix"],
            "RUN_BACKGROUND": "worker",
            "STOP_TIMEOUT_SECONDS": "1",
            "DEFAULT_MEMORY": "64m",
            "START_TIMEOUT_SECONDS": "20",
            "FLASK_APP": "wsgi",
            "EXAMPLE_MODEL": "false",
            "AUTH_DISABLED": "true",
        }
    )
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return env


class Process:
    """A child process in its own process group, so SIGKILL takes all of it (gunicorn and its workers)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)
        self._log.close()

    def terminate(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_web(tmp: Path, env: dict[str, str], name: str = "web") -> tuple[Process, str]:
    port = free_port()
    env = {**env, "PORT": str(port)}
    proc = Process([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], env, tmp / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=5).ok:
                return proc, base
        except requests.RequestException:
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"gunicorn did not come up:\n{proc.log()}")
        time.sleep(0.1)


def start_worker(tmp: Path, env: dict[str, str], name: str = "worker") -> Process:
    return Process([str(BIN / "flask"), "worker"], env, tmp / f"{name}.log")


class Processes:
    """Every process a test starts, each registered the moment it exists, all killed at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[Process] = []

    def web(self, env: dict[str, str], name: str = "web") -> tuple[Process, str]:
        proc, base = start_web(self.tmp, env, name)  # killed by start_web itself if it never came up
        self.started.append(proc)
        return proc, base

    def worker(self, env: dict[str, str], name: str = "worker") -> Process:
        proc = start_worker(self.tmp, env, name)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.popen.poll() is None:
                proc.kill()
