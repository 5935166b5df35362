"""The service as it runs in production: gunicorn web workers and `flask worker` processes.

Shared by the tests and by bench/ (which puts this folder on its import path), so it imports
nothing from conftest: the caller gives the database, the instance name and the settings.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests
from waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(database_url: str, instance: str, prefix: str, **overrides) -> dict[str, str]:
    """The environment of a service process: this one's, without its database and Kafka, plus settings (KEY=value)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "INSTANCE_NAME": instance,
            "CONTAINER_PREFIX": prefix,
            "RUN_BACKGROUND": "worker",
            "STOP_TIMEOUT_SECONDS": "1",
            "FLASK_APP": "wsgi",
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
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group, as a crash of the machine would end it."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after 30 s; waits for the exit."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
            except ProcessLookupError:
                pass
        self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to this process only, as `docker stop` sends it to PID 1; its exit code."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        finally:
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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Web(Process):
    """gunicorn on a free port of 127.0.0.1, returned once it answers: with `workers`, once each has booted."""

    def __init__(self, env: dict[str, str], log: Path, workers: int | None = None, timeout: float = 60):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**env, "PORT": str(self.port)}
        if workers is not None:
            env["WEB_CONCURRENCY"] = str(workers)
        self.workers = workers or 1
        super().__init__([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], env, log)
        try:
            wait_for(self._up, timeout, f"gunicorn did not come up on {self.base}; see {log}")
        except BaseException:
            self.kill()
            raise

    def _up(self) -> bool:
        if not self.alive():
            raise AssertionError(f"gunicorn exited with {self.popen.returncode}:\n{self.log()[-4000:]}")
        if len(self.children()) < self.workers:
            return False
        try:  # several answers, so that more than the first worker to boot has taken one
            return all(requests.get(f"{self.base}/healthz", timeout=5).ok for _ in range(4 * self.workers))
        except requests.RequestException:
            return False

    def worker_pids(self) -> list[int]:
        return self.children()


def start_worker(env: dict[str, str], log: Path) -> Process:
    """The background role: idle shutdown, reconciliation and the Kafka listener."""
    return Process([str(BIN / "flask"), "worker"], env, log)


class Processes:
    """Every process a test starts, each registered the moment it exists, all killed at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[Process] = []

    def web(self, env: dict[str, str], name: str = "web") -> Web:
        web = Web(env, self.tmp / f"{name}.log")  # killed by Web itself if it never came up
        self.started.append(web)
        return web

    def worker(self, env: dict[str, str], name: str = "worker") -> Process:
        proc = start_worker(env, self.tmp / f"{name}.log")
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.alive():
                proc.kill()
