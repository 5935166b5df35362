"""Warm path measurement: one fast model container called four ways, at concurrency 1, 8 and 32.

The ways: directly; through nginx (keep-alive upstream: the practical limit of any proxy);
through a minimal Flask + urllib3 proxy under the service's gunicorn settings (the floor of our
stack); through the service (auth on with a user's token, request log at INFO, metrics on).

A repetition runs every way once, back to back, in an order that reverses from one repetition
to the next (ABBA), so that load from elsewhere on the machine that rises or falls during a
pair of repetitions weighs on every way alike. Fractions and added latencies are taken within
a repetition (paired) and the median over repetitions is quoted. The whole measurement runs
`passes` times in a row, to show whether it reproduces.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import dataclass

from . import containers
from .anchors import MinimalProxy, Nginx
from .config import FAST_ECHO, BenchError
from .machine import busy_cpu_seconds
from .processes import Web, cpu_seconds
from .session import Session
from .wrk import WrkResult, run_wrk

logger = logging.getLogger(__name__)

CONCURRENCIES = (1, 8, 32)
WAYS = ("direct", "nginx", "minimal", "service")
TITLES = {
    "direct": "direct",
    "nginx": "nginx",
    "minimal": "minimal Flask proxy",
    "service": "the service",
}
MODEL_CPUS = min(2, os.cpu_count() or 1)  # the fast model's CPU quota (the service's MAX_CPUS is 2)


@dataclass(frozen=True)
class Way:
    """One way to call the model: its URL, the Authorization it needs, the processes it costs."""

    name: str
    url: str
    authorization: str = ""
    workers: tuple[int, ...] = ()  # the web workers (gunicorn's), whose CPU per request is a target
    processes: tuple[int, ...] = ()  # every process of the proxy (master and workers)


@dataclass(frozen=True)
class Sample:
    result: WrkResult
    cpu_s: float | None  # web-worker CPU per request; None where there are no web workers
    others: float  # CPUs' worth the rest of the machine used meanwhile at normal priority
    path_cpu_s: float  # CPU per request of wrk, the proxies and the model together


Rep = dict[str, Sample]  # way name -> its sample in one repetition
Pass = dict[int, list[Rep]]  # concurrency -> repetitions


class Stand:
    """The fast model kept warm by the service, with nginx and the minimal proxy in front of it."""

    def __init__(self, s: Session, web: Web):
        # every CPU the service allows: a quota of one would throttle the model under load (CFS)
        model_id = s.register(web, model_name="fast-echo", image=FAST_ECHO, cpus=MODEL_CPUS)
        s.call(web, "POST", f"/api/models/{model_id}/start", {"keep_warm": True})
        name = containers.model_container(model_id)
        upstream = f"127.0.0.1:{containers.published_port(s.dc, name)}"
        self.model_pid = s.dc.containers.get(name).attrs["State"]["Pid"]
        self.nginx = Nginx(s.cfg.artifacts / "nginx", web.workers, upstream)
        try:
            self.minimal = MinimalProxy(s.env(), s.log("minimal-proxy"), web.workers, f"http://{upstream}")
        except BenchError:
            self.nginx.stop()
            raise
        self.ways = [
            Way("direct", f"http://{upstream}/predict"),
            Way("nginx", f"{self.nginx.base}/predict", processes=_family(self.nginx.process)),
            Way(
                "minimal",
                f"{self.minimal.base}/predict",
                workers=tuple(self.minimal.worker_pids()),
                processes=_family(self.minimal.process),
            ),
            Way(
                "service",
                f"{web.base}/api/models/{model_id}/infer",
                s.user_authorization,
                tuple(web.worker_pids()),
                _family(web),
            ),
        ]

    def pids(self) -> list[int]:
        """Every process that serves the warm path: the proxies and the model's server."""
        return [self.model_pid, *(pid for way in self.ways for pid in way.processes)]

    def stop(self) -> None:
        self.minimal.stop()
        self.nginx.stop()


def measure(stand: Stand, reps: int, seconds: int, concurrencies=CONCURRENCIES, cpus: str = "") -> Pass:
    """One pass: {concurrency: [one Rep per repetition]}; cpus pins wrk (taskset list)."""
    ways = stand.ways
    for way in ways:  # warm-up: connection pools, token cache, code paths
        _sample(stand, way, 32, 1, cpus)
    results: Pass = {}
    for c in concurrencies:
        results[c] = []
        for rep in range(reps):
            order = ways if rep % 2 == 0 else ways[::-1]
            got = {way.name: _sample(stand, way, c, seconds, cpus) for way in order}
            results[c].append(got)
            logger.info(
                "warm c=%s rep %s: %s",
                c,
                rep + 1,
                ", ".join(
                    f"{name} {got[name].result.rps:,.0f}/s p50 {got[name].result.p50_s * 1e3:.2f} ms" for name in WAYS
                ),
            )
    return results


def _sample(stand: Stand, way: Way, c: int, seconds: int, cpus: str) -> Sample:
    """One wrk run whose connections reached every worker (see _one_sided), within RERUNS tries."""
    for _ in range(RERUNS):
        sample, shares = _measured(stand, way, c, seconds, cpus)
        if not _one_sided(shares, c):
            return sample
        RERUN_COUNT[(way.name, c)] = RERUN_COUNT.get((way.name, c), 0) + 1
        logger.info(
            "warm %s c=%s: its connections all went to one worker (CPU shares %s); run again", way.name, c, shares
        )
    return sample


# The noise this removes: wrk opens its keep-alive connections in a burst, and the kernel hands
# each to whichever worker is in accept() first; now and then one of the two workers takes them
# all, and that run measures one worker instead of two (half the throughput). With many clients
# coming and going, as in use, the split evens out; a run that measured one worker is run again.
RERUNS = 4
ONE_SIDED = 0.05  # a worker with less than this share of the workers' CPU got no connection
RERUN_COUNT: dict[tuple[str, int], int] = {}  # (way, concurrency) -> runs done again, for the report


def _one_sided(shares: list[float], c: int) -> bool:
    return len(shares) > 1 and c >= 2 * len(shares) and min(shares) < ONE_SIDED


def _measured(stand: Stand, way: Way, c: int, seconds: int, cpus: str) -> tuple[Sample, list[float]]:
    """One wrk run; the CPU of the web workers, of the whole path, and of the rest of the machine."""
    serving = way.workers or way.processes[1:]  # nginx: its workers, after its master
    before = [_cpu([pid]) for pid in serving]
    path, everything = [stand.model_pid, *way.processes], stand.pids()
    workers, on_path, ours = _cpu(way.workers), _cpu(path) + _wrk_cpu(), _cpu(everything) + _wrk_cpu()
    machine, began = busy_cpu_seconds(), time.monotonic()
    result = run_wrk(way.url, c, seconds, way.authorization, cpus)
    elapsed, wrk = time.monotonic() - began, _wrk_cpu()
    others = (busy_cpu_seconds() - machine - (_cpu(everything) + wrk - ours)) / elapsed
    if result.errors or result.non2xx or not result.requests:
        raise BenchError(f"{way.url} at c={c}: {result.errors} socket errors, {result.non2xx} non-2xx answers")
    cpu = (_cpu(way.workers) - workers) / result.requests if way.workers else None
    used = [_cpu([pid]) - b for pid, b in zip(serving, before, strict=True)]
    shares = [round(u / sum(used), 3) for u in used] if sum(used) > 0 else []
    return Sample(result, cpu, max(0.0, others), (_cpu(path) + wrk - on_path) / result.requests), shares


def _cpu(pids) -> float:
    return cpu_seconds(list(pids)) if pids else 0.0


def _wrk_cpu() -> float:
    """CPU seconds of the finished wrk runs (this process's waited-for children)."""
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done.ru_utime + done.ru_stime


def _family(process) -> tuple[int, ...]:
    """A process and its children (gunicorn's or nginx's master and workers)."""
    return (process.pid, *process.children())
