"""wrk (from Debian) as the load generator: C, epoll, a Lua script for the POST body."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .config import BenchError

SCRIPT = Path(__file__).resolve().parent / "post.lua"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_s: float
    p99_s: float
    errors: int
    non2xx: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "missing"
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).split("Copyright")[0].strip()


def cpu_list(cpus: str) -> list[int]:
    """A taskset CPU list ("1", "0,1", "0-1") as the CPUs it names."""
    out: list[int] = []
    for part in cpus.split(","):
        first, _, last = part.strip().partition("-")
        out += list(range(int(first), int(last or first) + 1))
    return out


def run_wrk(
    url: str,
    connections: int,
    seconds: int,
    authorization: str = "",
    cpus: str = "",
) -> WrkResult:
    """Closed-loop load: `connections` keep-alive connections, each sending as fast as answered.

    authorization: the Authorization header to send; cpus: a taskset CPU list to pin wrk to
    (one wrk thread per pinned CPU, at most two).
    """
    if shutil.which("wrk") is None:
        raise BenchError("wrk is missing (apt-get install -y wrk; scripts/bench.sh does it)")
    threads = min(connections, 2, len(cpu_list(cpus)) if cpus else 2)
    args = [
        *(["taskset", "-c", cpus] if cpus else []),
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, int(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
    ]
    env = {**os.environ, "BENCH_AUTHORIZATION": authorization}
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30, env=env)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    data = json.loads(line.split(" ", 1)[1])
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_s=data["p50_us"] / 1e6,
        p99_s=data["p99_us"] / 1e6,
        errors=data["errors"],
        non2xx=data["non2xx"],
    )
