"""A Docker engine of a test's own (scripts/private-dockerd.sh), for faults that stop an engine.

The shared engine that the rest of the suite (and other work on the machine) uses is never
stopped: a test that takes an engine down starts this one, moves the images it needs into it,
points the service at it with DOCKER_HOST, and stops and starts only it.
"""

from __future__ import annotations

import os
import subprocess

import docker
from service_process import ROOT

SCRIPT = ROOT / "scripts" / "private-dockerd.sh"


class PrivateEngine:
    """One named instance; `clean()` removes all it made (a crashed run's is removed by the next start)."""

    def __init__(self, name: str):
        self.name = name
        self.host = ""

    def _run(self, command: str) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), command, self.name, str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise AssertionError(f"private-dockerd.sh {command} {self.name} failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip()

    def start(self) -> str:
        """Start it (again, with the same data after `stop`); its DOCKER_HOST."""
        self.host = self._run("start")
        return self.host

    def stop(self) -> None:
        """The fault: its dockerd and containerd stopped and gone."""
        self._run("stop")

    def clean(self) -> None:
        self._run("clean")

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=60)

    def load_images(self, source: docker.DockerClient, *names: str) -> None:
        """Copy images from `source` (docker save | docker load): no registry is needed or reachable."""
        target = self.client()
        try:
            for name in names:
                target.images.load(b"".join(source.images.get(name).save(named=True)))
        finally:
            target.close()
