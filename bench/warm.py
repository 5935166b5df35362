"""Warm path stage: the measurement's passes, the anchor table, pass-to-pass agreement, the targets.

Two kinds of throughput fraction are given. The measured one (requests per second of a way over
another's, within one repetition) is what the targets are about; on a machine that other work
also keeps busy it moves with the CPU share each way happens to get. The fraction per
CPU-second (requests per CPU-second of the whole path: wrk, the way's proxy processes and the
model's server) hardly moves with that load; where both ways are CPU-bound, as the two Flask
proxies are at c=32, it is the throughput fraction a machine to itself would give. (The
service's PostgreSQL and background process are not on the path: a warm inference does not
wait for them.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import profile
from .processes import Web
from .report import Row, ms
from .session import Session
from .stats import median
from .warm_measure import RERUN_COUNT, TITLES, WAYS, Pass, Rep, Stand, measure
from .wrk import run_wrk

logger = logging.getLogger(__name__)

THROUGHPUT_C = 32
TARGET_OF_MINIMAL = 0.85  # the service's throughput at c=32, as a fraction of the minimal proxy's
LATENCY_C = 1
TARGET_P50_OVER_MINIMAL_S = 0.0002  # the service's added p50 at c=1 over the minimal proxy's
TARGET_CPU_RATIO = 1.25  # the service's web-worker CPU per inference over the minimal proxy's
REPRODUCIBLE = 0.15  # a fraction's later pass within ±15% of its first
PROXIES = ("nginx", "minimal", "service")


def paired(reps: list[Rep], figure: Callable[[Rep], float]) -> list[float]:
    return [figure(rep) for rep in reps]


def of(way: str, anchor: str) -> Callable[[Rep], float]:
    """Throughput of `way` over the anchor's, within a repetition."""
    return lambda rep: rep[way].result.rps / rep[anchor].result.rps


def of_per_cpu(way: str, anchor: str) -> Callable[[Rep], float]:
    """Requests per CPU-second of the whole path, `way` over the anchor's, within a repetition."""
    return lambda rep: rep[anchor].path_cpu_s / rep[way].path_cpu_s


def added(way: str, pct: str) -> Callable[[Rep], float]:
    attr = f"{pct}_s"
    return lambda rep: getattr(rep[way].result, attr) - getattr(rep["direct"].result, attr)


def cpu_ratio(rep: Rep) -> float:
    return rep["service"].cpu_s / rep["minimal"].cpu_s


def pooled(passes: list[Pass]) -> Pass:
    """All passes' repetitions together, per concurrency."""
    return {c: [rep for p in passes for rep in p[c]] for c in passes[0]}


def others(results: Pass) -> float:
    """The median, over a pass's runs, of the CPUs' worth other processes used meanwhile."""
    return median([sample.others for reps in results.values() for rep in reps for sample in rep.values()])


def anchor_table(results: Pass) -> str:
    """Markdown: every way at every concurrency, medians of the repetitions (min..max)."""
    lines = [
        "| Path | Concurrency | Throughput | Of direct | Of the minimal proxy | Of the minimal proxy, "
        "per CPU-second | p50 (added) | p99 (added) | Web-worker CPU per inference | Whole-path CPU per request |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, reps in results.items():
        for way in WAYS:
            r = [rep[way] for rep in reps]
            cpu = [x.cpu_s for x in r if x.cpu_s is not None]
            cells = [
                TITLES[way],
                str(c),
                f"{median([x.result.rps for x in r]):,.0f} req/s",
                "" if way == "direct" else _pct_spread(paired(reps, of(way, "direct"))),
                "" if way == "minimal" else _pct_spread(paired(reps, of(way, "minimal"))),
                "" if way == "minimal" else _pct_spread(paired(reps, of_per_cpu(way, "minimal"))),
                _latency(reps, way, "p50"),
                _latency(reps, way, "p99"),
                ms(median(cpu), 2) if cpu else "",
                ms(median([x.path_cpu_s for x in r]), 2),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _latency(reps: list[Rep], way: str, pct: str) -> str:
    value = ms(median([getattr(rep[way].result, f"{pct}_s") for rep in reps]), 2)
    return value if way == "direct" else f"{value} ({_ms_signed(median(paired(reps, added(way, pct))))})"


def fractions(results: Pass, per_cpu: bool = False) -> dict[str, float]:
    """Every fraction of a pass by name (medians of the repetitions): what must reproduce."""
    figure, suffix = (of_per_cpu, ", per CPU-second") if per_cpu else (of, "")
    out = {}
    for c, reps in results.items():
        for way in PROXIES:
            if not per_cpu:  # direct is not CPU-bound: a fraction of it per CPU-second means little
                out[f"{TITLES[way]}, c={c}, of direct"] = median(paired(reps, figure(way, "direct")))
            if way != "minimal":
                out[f"{TITLES[way]}, c={c}, of the minimal proxy{suffix}"] = median(
                    paired(reps, figure(way, "minimal"))
                )
    return out


def agreement(passes: list[Pass], per_cpu: bool = False) -> tuple[list[str], float, str]:
    """Table lines for each fraction in every pass and its change from the first; the largest change."""
    runs = [fractions(p, per_cpu) for p in passes]
    lines, worst, worst_name = [], 0.0, ""
    for name, first in runs[0].items():
        change = max((run[name] / first - 1 for run in runs[1:]), key=abs, default=0.0)
        if abs(change) >= abs(worst):
            worst, worst_name = change, name
        lines.append(f"| {name} | " + " | ".join(f"{run[name]:.1%}" for run in runs) + f" | {change:+.1%} |")
    return lines, worst, worst_name


def agreement_table(passes: list[Pass]) -> str:
    measured, _, _ = agreement(passes)
    per_cpu, _, _ = agreement(passes, per_cpu=True)
    runs = " | ".join(f"Run {i + 1}" for i in range(len(passes)))
    return "\n".join(
        [
            f"| Fraction | {runs} | Largest change from run 1 |",
            "|---|" + "---|" * len(passes) + "---|",
            *measured,
            *per_cpu,
            "| *CPUs the rest of the machine used during the runs (median; niced work left out)* | "
            + " | ".join(f"{others(p):.2f}" for p in passes)
            + " |  |",
        ]
    )


def rows(passes: list[Pass], config: str) -> list[Row]:
    """The warm-path targets, judged on the repetitions of every pass together."""
    everything = pooled(passes)
    name = f"Warm path ({config})"
    at_throughput = everything[THROUGHPUT_C]
    share = paired(at_throughput, of("service", "minimal"))
    share_cpu = paired(at_throughput, of_per_cpu("service", "minimal"))
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
            f"the service {median([r['service'].result.rps for r in at_throughput]):,.0f} req/s; "
            f"per CPU-second {median(share_cpu):.0%}",
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
        for per_cpu, kind in ((False, "throughput fraction"), (True, "fraction per CPU-second")):
            _, worst, worst_name = agreement(passes, per_cpu)
            out.append(
                Row(
                    name,
                    f"reproducibility: largest change of a {kind} between {len(passes)} passes in a row",
                    f"{worst:+.1%}",
                    "",
                    f"{worst_name}; the rest of the machine used "
                    + " / ".join(f"{others(p):.2f}" for p in passes)
                    + " CPUs",
                    f"within ±{REPRODUCIBLE:.0%}",
                    abs(worst) <= REPRODUCIBLE,
                )
            )
    return out


def _pct_spread(values: list[float]) -> str:
    return f"{median(values):.0%} ({min(values):.0%}..{max(values):.0%})"


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
    s.notes.append(_reruns_note())
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
        s.sections.append(
            (
                "Warm path: pass to pass",
                f"The warm-path measurement ran {len(passes)} times in a row on the same processes; "
                "each fraction (median of its pass) and its change from the first pass. Measured "
                "throughput fractions first, then fractions per CPU-second of the whole path:\n\n"
                + agreement_table(passes),
            )
        )
    if profiled:
        s.sections.append(("Warm path: where the web workers' time goes", profiled))
    return rows(passes, config)


PROFILE_SECONDS = 5


def _profile(s: Session, stand: Stand) -> str:
    """py-spy on the minimal proxy's and the service's web workers, one run at c=32 each."""
    stacks, files, requests = {}, {}, {}
    for way in stand.ways:
        if not way.workers:
            continue
        files[way.name] = s.cfg.artifacts / f"profile-{way.name}.txt"
        spies = profile.record(list(way.workers), PROFILE_SECONDS, files[way.name])
        requests[way.name] = run_wrk(way.url, THROUGHPUT_C, PROFILE_SECONDS, way.authorization, s.cfg.wrk_cpus).requests
        stacks[way.name] = profile.collect(spies, list(way.workers), files[way.name])
        logger.info("profiled %s: %s samples in %s", way.name, sum(stacks[way.name].values()), files[way.name])
    return profile.section(stacks, TITLES, PROFILE_SECONDS, files, requests)


def _reruns_note() -> str:
    """How many warm-path runs measured one worker only and were run again (warm_measure._sample)."""
    counted = ", ".join(f"{TITLES[w]} c={c}: {n}" for (w, c), n in sorted(RERUN_COUNT.items()))
    return (
        "Warm path: a run whose keep-alive connections all landed on one of the two workers (the "
        "kernel gives a burst of connections to whichever worker accepts first) measures one worker, "
        "not two, and is run again (at most 4 tries): " + (counted if counted else "none was needed in this run") + "."
    )
