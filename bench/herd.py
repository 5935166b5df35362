"""Herd: 200 concurrent first requests on a stopped model, through gunicorn with 4 workers.

Containers started are counted from Docker's event log. The baseline is a lone first request
on the same stopped model, measured in the same repetition.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from urllib.parse import urlsplit

from . import containers
from .config import FAST_ECHO, BenchError
from .processes import Web
from .report import Row, ms
from .session import Session
from .stats import median, ms_spread, percentile

logger = logging.getLogger(__name__)

HERD = 200
WORKERS = 4
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def _post(host: str, port: int, path: str, authorization: str) -> tuple[int, float, str]:
    began = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.request(
            "POST", path, body=BODY, headers={"Content-Type": "application/json", "Authorization": authorization}
        )
        response = conn.getresponse()
        response.read()
        return (
            response.status,
            time.perf_counter() - began,
            response.getheader("X-Cold-Start") or "",
        )
    finally:
        conn.close()


def fire(url: str, count: int, authorization: str) -> list[tuple[int, float, str]]:
    """`count` threads released together, one request each: (status, seconds, X-Cold-Start)."""
    parts = urlsplit(url)
    gate = threading.Barrier(count)
    results: list = [None] * count

    def one(i: int) -> None:
        gate.wait()
        try:
            results[i] = _post(parts.hostname, parts.port, parts.path, authorization)
        except Exception as exc:  # counted as a failure below
            results[i] = (0, 0.0, exc.__class__.__name__)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    return results


def run(s: Session, web: Web) -> list[Row]:
    model_id = s.register(web, model_name="herd", image=FAST_ECHO)
    url = f"{web.base}/api/models/{model_id}/infer"
    parts = urlsplit(url)
    p50s, p99s, lone, started = [], [], [], []
    for rep in range(s.cfg.reps):
        s.call(web, "POST", f"/api/models/{model_id}/stop")
        s.wait_stopped(web, model_id)
        status, took, cold = _post(parts.hostname, parts.port, parts.path, s.user_authorization)
        if status != 200 or cold != "true":
            raise BenchError(f"lone cold request: {status} cold={cold}")
        lone.append(took)
        s.call(web, "POST", f"/api/models/{model_id}/stop")
        s.wait_stopped(web, model_id)
        since = time.time()
        results = fire(url, HERD, s.user_authorization)
        failed = [r for r in results if r is None or r[0] != 200]
        if failed:
            raise BenchError(f"herd: {len(failed)} of {HERD} requests failed, e.g. {failed[0]}")
        latencies = [r[1] for r in results]
        p50s.append(percentile(latencies, 50))
        p99s.append(percentile(latencies, 99))
        time.sleep(0.5)  # let the engine's event log catch up
        started.append(containers.created_since(s.dc, since, model_id))
        logger.info(
            "herd rep %s: %s containers started, p50 %.0f ms, p99 %.0f ms (lone %.0f ms)",
            rep + 1,
            started[-1],
            p50s[-1] * 1e3,
            p99s[-1] * 1e3,
            lone[-1] * 1e3,
        )
    s.call(web, "POST", f"/api/models/{model_id}/stop")
    name = f"Herd ({HERD} first requests, {WORKERS} workers)"
    lone_ms = ms(median(lone), 0)
    return [
        Row(
            name,
            "containers started",
            " ".join(str(n) for n in started),
            "",
            "counted from Docker events",
            "1 per herd",
            all(n == 1 for n in started),
        ),
        Row(
            name,
            "latency p50",
            ms(median(p50s), 0),
            ms_spread(p50s, 0),
            f"lone first request {lone_ms}",
        ),
        Row(
            name,
            "latency p99",
            ms(median(p99s), 0),
            ms_spread(p99s, 0),
            f"lone first request {lone_ms}",
        ),
        Row(
            name,
            "p50 added over a lone first request",
            ms(median([a - b for a, b in zip(p50s, lone, strict=True)]), 0),
            ms_spread([a - b for a, b in zip(p50s, lone, strict=True)], 0),
        ),
    ]
