"""The machine the figures were measured on, described for docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime

import docker

from . import containers, database
from .wrk import wrk_version


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _docker_cli() -> str:
    try:
        out = subprocess.run(
            ["docker", "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "missing"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def describe(dc: docker.DockerClient, database_url: str) -> list[tuple[str, str]]:
    return [
        ("Date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", f"{_cpu_model()}, {os.cpu_count()} cores"),
        ("Memory", f"{_memory_gib():.1f} GiB"),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        ("OS", _os_name()),
        ("Python", sys.version.split()[0]),
        ("Docker", f"engine {containers.version(dc)}, CLI {_docker_cli()}"),
        ("PostgreSQL", database.server_version(database_url)),
        ("Load generator", wrk_version()),
    ]


def _os_name() -> str:
    try:
        with open("/etc/os-release") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def busy_cpu_seconds() -> float:
    """CPU time the machine has spent busy at normal priority, from /proc/stat.

    Idle, iowait and the time of niced processes (nice > 0: builds in the background, which
    yield to the benchmark's processes) are left out.
    """
    with open("/proc/stat") as handle:
        user, _nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in handle.readline().split()[1:9])
    return (user + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
