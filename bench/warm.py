"""Warm path: the same fast model container called directly and through the service.

wrk runs alternate between the two (direct first on even repetitions, the service first on
odd ones) so that a burst of load from elsewhere on the machine hits both alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import containers
from .config import FAST_ECHO, BenchError
from .processes import Web, cpu_seconds
from .report import Row, ms
from .session import Session
from .stats import median, ms_spread
from .wrk import WrkResult, run_wrk

logger = logging.getLogger(__name__)

CONCURRENCIES = (1, 8, 32)
SECONDS = 3
TARGET_C = 8  # the latency targets are set at this concurrency
TARGET_P50_S = 0.001
TARGET_P99_S = 0.005
THROUGHPUT_C = 32
TARGET_FRACTION = 0.5


def start_fast_model(s: Session, web: Web) -> tuple[int, str, str]:
    """Register and start the fast echo model (kept warm); its direct and service URLs."""
    model_id = s.register(web, model_name="fast-echo", image=FAST_ECHO)
    s.call(web, "POST", f"/api/models/{model_id}/start", {"keep_warm": True})
    port = containers.published_port(s.dc, containers.model_container(model_id))
    return (
        model_id,
        f"http://127.0.0.1:{port}/predict",
        f"{web.base}/api/models/{model_id}/infer",
    )


@dataclass(frozen=True)
class Pair:
    """One repetition: the direct run, the service run, web-worker CPU per service request."""

    direct: WrkResult
    service: WrkResult
    cpu_s: float


def measure(
    s: Session,
    direct: str,
    service: str,
    workers: list[int],
    concurrencies=CONCURRENCIES,
) -> dict[int, list[Pair]]:
    """{concurrency: [one Pair per repetition]}; `workers` are the web workers' pids."""
    run_wrk(direct, 8, 1)  # warm-up: connection pools, advisory locks, code paths
    run_wrk(service, 32, 2)
    results: dict[int, list[Pair]] = {}
    for c in concurrencies:
        results[c] = []
        for rep in range(s.cfg.reps):
            order = (direct, service) if rep % 2 == 0 else (service, direct)
            got, cpu = {}, 0.0
            for url in order:
                before = cpu_seconds(workers)
                got[url] = _checked(run_wrk(url, c, SECONDS), url, c)
                if url == service:
                    cpu = (cpu_seconds(workers) - before) / got[url].requests
            pair = Pair(got[direct], got[service], cpu)
            results[c].append(pair)
            logger.info(
                "warm c=%s rep %s: direct p50 %.2f ms %.0f/s, service p50 %.2f ms %.0f/s",
                c,
                rep + 1,
                pair.direct.p50_s * 1e3,
                pair.direct.rps,
                pair.service.p50_s * 1e3,
                pair.service.rps,
            )
    return results


def _checked(result: WrkResult, url: str, c: int) -> WrkResult:
    if result.errors or result.non2xx:
        raise BenchError(f"{url} at c={c}: {result.errors} socket errors, {result.non2xx} non-2xx answers")
    return result


def rows(results: dict[int, list[Pair]], label: str = "Warm path") -> list[Row]:
    out = []
    for c, pairs in results.items():
        added50 = [p.service.p50_s - p.direct.p50_s for p in pairs]
        added99 = [p.service.p99_s - p.direct.p99_s for p in pairs]
        fraction = [p.service.rps / p.direct.rps for p in pairs]
        bench = f"{label}, concurrency {c}"
        direct50 = median([p.direct.p50_s for p in pairs])
        direct99 = median([p.direct.p99_s for p in pairs])
        out += [
            Row(
                bench,
                "added latency p50",
                ms(median(added50), 2),
                ms_spread(added50, 2),
                f"direct p50 {ms(direct50, 2)}",
                *_target(c == TARGET_C, median(added50) <= TARGET_P50_S, "≤ 1 ms"),
            ),
            Row(
                bench,
                "added latency p99",
                ms(median(added99), 2),
                ms_spread(added99, 2),
                f"direct p99 {ms(direct99, 2)}",
                *_target(c == TARGET_C, median(added99) <= TARGET_P99_S, "≤ 5 ms"),
            ),
            Row(
                bench,
                "throughput, fraction of direct",
                f"{median(fraction):.0%} ({median([p.service.rps for p in pairs]):,.0f} req/s)",
                f"{min(fraction):.0%}..{max(fraction):.0%}",
                f"direct {median([p.direct.rps for p in pairs]):,.0f} req/s",
                *_target(c == THROUGHPUT_C, median(fraction) >= TARGET_FRACTION, "≥ 50%"),
            ),
        ]
    cpu = [p.cpu_s for pairs in results.values() for p in pairs]
    out.append(
        Row(
            label,
            "web-worker CPU per inference (all concurrencies)",
            ms(median(cpu), 2),
            ms_spread(cpu, 2),
            "from /proc during the service's runs",
        )
    )
    return out


def _target(applies: bool, met: bool, text: str) -> tuple[str, bool | None]:
    return (text, met) if applies else ("", None)
