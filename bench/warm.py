"""Warm path: the same fast model container called directly and through the service.

wrk runs alternate between the two (direct first on even repetitions, the service first on
odd ones) so that a burst of load from elsewhere on the machine hits both alike.
"""

from __future__ import annotations

import logging

from . import containers
from .config import FAST_ECHO, BenchError
from .processes import Web
from .report import Row, ms
from .session import Session
from .stats import median, spread
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


def measure(
    s: Session, direct: str, service: str, concurrencies=CONCURRENCIES
) -> dict[int, list[tuple]]:
    """{concurrency: [(direct, service) WrkResult pairs, one per repetition]}."""
    run_wrk(direct, 8, 1)  # warm-up: connection pools, advisory locks, code paths
    run_wrk(service, 32, 2)
    results: dict[int, list[tuple[WrkResult, WrkResult]]] = {}
    for c in concurrencies:
        pairs = []
        for rep in range(s.cfg.reps):
            order = (direct, service) if rep % 2 == 0 else (service, direct)
            got = {url: run_wrk(url, c, SECONDS) for url in order}
            for url, result in got.items():
                if result.errors or result.non2xx:
                    raise BenchError(
                        f"{url} at c={c}: {result.errors} socket errors, {result.non2xx} non-2xx answers"
                    )
            pairs.append((got[direct], got[service]))
            logger.info(
                "warm c=%s rep %s: direct p50 %.2f ms %.0f/s, service p50 %.2f ms %.0f/s",
                c,
                rep + 1,
                got[direct].p50_s * 1e3,
                got[direct].rps,
                got[service].p50_s * 1e3,
                got[service].rps,
            )
        results[c] = pairs
    return results


def rows(
    results: dict[int, list[tuple[WrkResult, WrkResult]]], label: str = "Warm path"
) -> list[Row]:
    out = []
    for c, pairs in results.items():
        added50 = [sv.p50_s - d.p50_s for d, sv in pairs]
        added99 = [sv.p99_s - d.p99_s for d, sv in pairs]
        fraction = [sv.rps / d.rps for d, sv in pairs]
        bench = f"{label}, concurrency {c}"
        out.append(
            Row(
                bench,
                "added latency p50",
                ms(median(added50), 2),
                _ms_spread(added50),
                f"direct p50 {ms(median([d.p50_s for d, _ in pairs]), 2)}",
                *_target(c == TARGET_C, median(added50) <= TARGET_P50_S, "≤ 1 ms"),
            )
        )
        out.append(
            Row(
                bench,
                "added latency p99",
                ms(median(added99), 2),
                _ms_spread(added99),
                f"direct p99 {ms(median([d.p99_s for d, _ in pairs]), 2)}",
                *_target(c == TARGET_C, median(added99) <= TARGET_P99_S, "≤ 5 ms"),
            )
        )
        out.append(
            Row(
                bench,
                "throughput, fraction of direct",
                f"{median(fraction):.0%} ({median([sv.rps for _, sv in pairs]):,.0f} req/s)",
                spread(fraction),
                f"direct {median([d.rps for d, _ in pairs]):,.0f} req/s",
                *_target(
                    c == THROUGHPUT_C, median(fraction) >= TARGET_FRACTION, "≥ 50%"
                ),
            )
        )
    return out


def _target(applies: bool, met: bool, text: str) -> tuple[str, bool | None]:
    return (text, met) if applies else ("", None)


def _ms_spread(values: list[float]) -> str:
    return f"{min(values) * 1e3:.2f}..{max(values) * 1e3:.2f} ms"
