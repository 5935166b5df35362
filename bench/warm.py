"""Warm path: one fast model container called four ways, at concurrency 1, 8 and 32.

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
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import containers, profile
from .anchors import MinimalProxy, Nginx
from .config import FAST_ECHO, BenchError
from .machine import busy_cpu_seconds
from .processes import Web, cpu_seconds
from .report import Row, ms
from .session import Session
from .stats import median
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
THROUGHPUT_C = 32
TARGET_OF_MINIMAL = 0.85  # the service's throughput at c=32, as a fraction of the minimal proxy's
LATENCY_C = 1
TARGET_P50_OVER_MINIMAL_S = 0.0002  # the service's added p50 at c=1 over the minimal proxy's
TARGET_CPU_RATIO = 1.25  # the service's web-worker CPU per inference over the minimal proxy's
REPRODUCIBLE = 0.15  # a fraction's second pass within ±15% of its first


@dataclass(frozen=True)
class Way:
    """One way to call the model: its URL, the Authorization it needs, the web workers it costs."""

    name: str
    url: str
    authorization: str = ""
    workers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Sample:
    result: WrkResult
    cpu_s: float | None  # web-worker CPU per request; None where there are no web workers
    others: float  # CPUs' worth the rest of the machine used meanwhile at normal priority


Rep = dict[str, Sample]  # way name -> its sample in one repetition
Pass = dict[int, list[Rep]]  # concurrency -> repetitions


class Stand:
    """The fast model kept warm by the service, with nginx and the minimal proxy in front of it."""

    def __init__(self, s: Session, web: Web):
        model_id = s.register(web, model_name="fast-echo", image=FAST_ECHO)
        s.call(web, "POST", f"/api/models/{model_id}/start", {"keep_warm": True})
        name = containers.model_container(model_id)
        upstream = f"127.0.0.1:{containers.published_port(s.dc, name)}"
        self._model_pid = s.dc.containers.get(name).attrs["State"]["Pid"]
        self._web = web
        self.nginx = Nginx(s.cfg.artifacts / "nginx", web.workers, upstream)
        try:
            self.minimal = MinimalProxy(s.env(), s.log("minimal-proxy"), web.workers, f"http://{upstream}")
        except BenchError:
            self.nginx.stop()
            raise
        self.ways = [
            Way("direct", f"http://{upstream}/predict"),
            Way("nginx", f"{self.nginx.base}/predict"),
            Way("minimal", f"{self.minimal.base}/predict", workers=tuple(self.minimal.worker_pids())),
            Way(
                "service",
                f"{web.base}/api/models/{model_id}/infer",
                s.user_authorization,
                tuple(web.worker_pids()),
            ),
        ]

    def pids(self) -> list[int]:
        """Every process that serves the warm path: gunicorns, nginx, the model's server."""
        out = [self._model_pid]
        for process in (self._web.process, self.minimal.process, self.nginx.process):
            out += [process.pid, *process.children()]
        return out

    def stop(self) -> None:
        self.minimal.stop()
        self.nginx.stop()


def measure(stand: Stand, reps: int, seconds: int, concurrencies=CONCURRENCIES, cpus: str = "") -> Pass:
    """One pass: {concurrency: [one Rep per repetition]}; cpus pins wrk (taskset list)."""
    ways, pids = stand.ways, stand.pids()
    for way in ways:  # warm-up: connection pools, token cache, code paths
        _sample(way, 32, 1, cpus, pids)
    results: Pass = {}
    for c in concurrencies:
        results[c] = []
        for rep in range(reps):
            order = ways if rep % 2 == 0 else ways[::-1]
            got = {way.name: _sample(way, c, seconds, cpus, pids) for way in order}
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


def _sample(way: Way, c: int, seconds: int, cpus: str, stand: list[int]) -> Sample:
    """One wrk run, with the web workers' CPU and what the rest of the machine used meanwhile."""
    before = cpu_seconds(list(way.workers)) if way.workers else 0.0
    ours, machine, began = _ours(stand), busy_cpu_seconds(), time.monotonic()
    result = run_wrk(way.url, c, seconds, way.authorization, cpus)
    others = (busy_cpu_seconds() - machine - (_ours(stand) - ours)) / (time.monotonic() - began)
    if result.errors or result.non2xx or not result.requests:
        raise BenchError(f"{way.url} at c={c}: {result.errors} socket errors, {result.non2xx} non-2xx answers")
    cpu = (cpu_seconds(list(way.workers)) - before) / result.requests if way.workers else None
    return Sample(result, cpu, max(0.0, others))


def _ours(stand: list[int]) -> float:
    """CPU seconds of the stand's processes and of the finished wrk runs (this process's children)."""
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu_seconds(stand) + done.ru_utime + done.ru_stime


# -- figures -------------------------------------------------------------------------------------
def paired(reps: list[Rep], figure: Callable[[Rep], float]) -> list[float]:
    return [figure(rep) for rep in reps]


def of_direct(way: str) -> Callable[[Rep], float]:
    return lambda rep: rep[way].result.rps / rep["direct"].result.rps


def of_minimal(way: str) -> Callable[[Rep], float]:
    return lambda rep: rep[way].result.rps / rep["minimal"].result.rps


def added(way: str, pct: str) -> Callable[[Rep], float]:
    attr = f"{pct}_s"
    return lambda rep: getattr(rep[way].result, attr) - getattr(rep["direct"].result, attr)


def cpu_ratio(rep: Rep) -> float:
    return rep["service"].cpu_s / rep["minimal"].cpu_s


def pooled(passes: list[Pass]) -> Pass:
    """All passes' repetitions together, per concurrency."""
    return {c: [rep for p in passes for rep in p[c]] for c in passes[0]}


def anchor_table(results: Pass) -> str:
    """Markdown: every way at every concurrency, medians of the repetitions (min..max)."""
    head = (
        "| Path | Concurrency | Throughput | Of direct | Of the minimal proxy | p50 | Added p50 "
        "| p99 | Added p99 | Web-worker CPU per inference |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for c, reps in results.items():
        for way in WAYS:
            r = [rep[way] for rep in reps]
            cpu = [x.cpu_s for x in r if x.cpu_s is not None]
            lines.append(
                "| "
                + " | ".join(
                    [
                        TITLES[way],
                        str(c),
                        f"{median([x.result.rps for x in r]):,.0f} req/s",
                        "" if way == "direct" else _pct_spread(paired(reps, of_direct(way))),
                        "" if way == "minimal" else _pct_spread(paired(reps, of_minimal(way))),
                        ms(median([x.result.p50_s for x in r]), 2),
                        "" if way == "direct" else _ms_delta(paired(reps, added(way, "p50"))),
                        ms(median([x.result.p99_s for x in r]), 2),
                        "" if way == "direct" else _ms_delta(paired(reps, added(way, "p99"))),
                        ms(median(cpu), 2) if cpu else "",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def fractions(results: Pass) -> dict[str, float]:
    """Every throughput fraction of a pass, by name: what must reproduce from pass to pass."""
    out = {}
    for c, reps in results.items():
        for way in WAYS:
            if way != "direct":
                out[f"{TITLES[way]}, c={c}, of direct"] = median(paired(reps, of_direct(way)))
            if way not in ("direct", "minimal"):
                out[f"{TITLES[way]}, c={c}, of the minimal proxy"] = median(paired(reps, of_minimal(way)))
    return out


def reproducibility_table(passes: list[Pass]) -> tuple[str, float, str]:
    """Markdown: each fraction in every pass and its change from the first; the largest change."""
    runs = [fractions(p) for p in passes]
    head = "| Fraction | " + " | ".join(f"Run {i + 1}" for i in range(len(runs))) + " | Largest change from run 1 |"
    lines = [head, "|---|" + "---|" * len(runs) + "---|"]
    worst, worst_name = 0.0, ""
    for name, first in runs[0].items():
        changes = [run[name] / first - 1 for run in runs[1:]]
        change = max(changes, key=abs, default=0.0)
        if abs(change) >= abs(worst):
            worst, worst_name = change, name
        lines.append(f"| {name} | " + " | ".join(f"{run[name]:.1%}" for run in runs) + f" | {change:+.1%} |")
    lines.append(
        "| *CPUs the rest of the machine used during the runs (median; not niced)* | "
        + " | ".join(f"{others(p):.2f}" for p in passes)
        + " |  |"
    )
    return "\n".join(lines), worst, worst_name


def others(results: Pass) -> float:
    """The median, over a pass's runs, of the CPUs' worth other processes used meanwhile."""
    return median([sample.others for reps in results.values() for rep in reps for sample in rep.values()])


def rows(passes: list[Pass], config: str) -> list[Row]:
    """The warm-path targets, judged on the repetitions of every pass together."""
    everything = pooled(passes)
    name = f"Warm path ({config})"
    at_throughput = everything[THROUGHPUT_C]
    share = paired(at_throughput, of_minimal("service"))
    at_latency = everything[LATENCY_C]
    over = [rep["service"].result.p50_s - rep["minimal"].result.p50_s for rep in at_latency]
    cpu = [cpu_ratio(rep) for reps in everything.values() for rep in reps]
    service_cpu = [rep["service"].cpu_s for reps in everything.values() for rep in reps]
    minimal_cpu = [rep["minimal"].cpu_s for reps in everything.values() for rep in reps]
    out = [
        Row(
            name,
            f"the service's throughput at c={THROUGHPUT_C}, fraction of the minimal proxy's",
            f"{median(share):.0%}",
            f"{min(share):.0%}..{max(share):.0%}",
            f"minimal proxy {median([r['minimal'].result.rps for r in at_throughput]):,.0f} req/s, "
            f"the service {median([r['service'].result.rps for r in at_throughput]):,.0f} req/s",
            f"≥ {TARGET_OF_MINIMAL:.0%}",
            median(share) >= TARGET_OF_MINIMAL,
        ),
        Row(
            name,
            f"the service's added p50 at c={LATENCY_C} over the minimal proxy's",
            _ms_signed(median(over)),
            f"{_ms_signed(min(over))}..{_ms_signed(max(over))}",
            f"added p50: minimal proxy {_ms_signed(median(paired(at_latency, added('minimal', 'p50'))))}, "
            f"the service {_ms_signed(median(paired(at_latency, added('service', 'p50'))))}",
            f"≤ {TARGET_P50_OVER_MINIMAL_S * 1e3:.1f} ms",
            median(over) <= TARGET_P50_OVER_MINIMAL_S,
        ),
        Row(
            name,
            "web-worker CPU per warm inference, the service over the minimal proxy (all concurrencies)",
            f"{median(cpu):.2f}×",
            f"{min(cpu):.2f}..{max(cpu):.2f}×",
            f"minimal proxy {ms(median(minimal_cpu), 2)}, the service {ms(median(service_cpu), 2)}",
            f"≤ {TARGET_CPU_RATIO:.2f}×",
            median(cpu) <= TARGET_CPU_RATIO,
        ),
    ]
    if len(passes) > 1:
        _, worst, worst_name = reproducibility_table(passes)
        out.append(
            Row(
                name,
                f"reproducibility: largest change of a throughput fraction between {len(passes)} passes in a row",
                f"{worst:+.1%}",
                "",
                worst_name,
                f"within ±{REPRODUCIBLE:.0%}",
                abs(worst) <= REPRODUCIBLE,
            )
        )
    return out


def _pct_spread(values: list[float]) -> str:
    return f"{median(values):.0%} ({min(values):.0%}..{max(values):.0%})"


def _ms_delta(values: list[float]) -> str:
    return f"{_ms_signed(median(values))} ({_ms_signed(min(values))}..{_ms_signed(max(values))})"


def _ms_signed(seconds: float) -> str:
    return f"{seconds * 1e3:+.2f} ms"


def run(s: Session, web: Web, config: str) -> list[Row]:
    """Every pass over the same stand; the anchor tables go to the report's sections."""
    stand = Stand(s, web)
    passes: list[Pass] = []
    try:
        for i in range(s.cfg.warm_passes):
            logger.info("warm pass %s of %s", i + 1, s.cfg.warm_passes)
            passes.append(measure(stand, s.cfg.warm_reps, s.cfg.warm_seconds, cpus=s.cfg.wrk_cpus))
        profiled = _profile(s, stand) if s.cfg.profile else None
    finally:
        stand.stop()
    reps = len(passes) * s.cfg.warm_reps
    s.sections.append(
        (
            "Warm path: the anchors",
            f"The same fast model container called four ways ({config}). wrk, keep-alive connections"
            + (f", pinned to CPU {s.cfg.wrk_cpus} (taskset)" if s.cfg.wrk_cpus else "")
            + f"; {s.cfg.warm_seconds} s per run, {reps} repetitions ({len(passes)} passes of {s.cfg.warm_reps}); "
            "medians, with min..max of the repetitions. Fractions and added latencies are paired: "
            "taken within one repetition, then the median.\n\n" + anchor_table(pooled(passes)),
        )
    )
    if len(passes) > 1:
        table, _, _ = reproducibility_table(passes)
        s.sections.append(
            (
                "Warm path: pass to pass",
                f"The warm-path measurement ran {len(passes)} times in a row on the same processes; "
                "each throughput fraction (median of its pass) and its change from the first pass:\n\n" + table,
            )
        )
    if profiled:
        s.sections.append(("Warm path: where the web workers' time goes", profiled))
    return rows(passes, config)


PROFILE_SECONDS = 5


def _profile(s: Session, stand: Stand) -> str:
    """py-spy on the minimal proxy's and the service's web workers, one run at c=32 each."""
    stacks, files = {}, {}
    for way in stand.ways:
        if not way.workers:
            continue
        files[way.name] = s.cfg.artifacts / f"profile-{way.name}.txt"
        spies = profile.record(list(way.workers), PROFILE_SECONDS, files[way.name])
        run_wrk(way.url, THROUGHPUT_C, PROFILE_SECONDS, way.authorization, s.cfg.wrk_cpus)
        stacks[way.name] = profile.collect(spies, list(way.workers), files[way.name])
        logger.info("profiled %s: %s samples in %s", way.name, sum(stacks[way.name].values()), files[way.name])
    return profile.section(stacks, TITLES, PROFILE_SECONDS, files)
