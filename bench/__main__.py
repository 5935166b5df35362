"""`python -m bench`: run the stages, print the Markdown table, write docs/benchmarks.md.

Order: ingestion (its own `flask worker` processes), then the service with 2 web workers and
a background process (warm path, cold start, replicas, registry scale, memory), then 4 web
workers (herd). The service runs with authentication on, request logging at INFO and metrics on.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import requests

from . import (
    cold,
    containers,
    database,
    herd,
    ingest,
    machine,
    memory,
    registry_scale,
    replicas,
    warm,
)
from .config import ROOT, BenchConfig, BenchError
from .report import document
from .session import Session

STAGES = ("ingest", "warm", "cold", "replicas", "registry", "herd")
WEB_WORKERS = 2
BACKGROUND = "background process (after the run)"
INGESTED = f"background process (after ingesting {ingest.EVENTS:,} events)"
logger = logging.getLogger("bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        default=",".join(STAGES),
        help=f"comma-separated stages of {', '.join(STAGES)}",
    )
    parser.add_argument("--reps", type=int, default=5, help="repetitions per figure (default 5)")
    parser.add_argument("--warm-seconds", type=int, default=2, help="seconds per warm-path wrk run (default 2)")
    parser.add_argument(
        "--warm-reps", type=int, default=6, help="warm-path repetitions per pass and concurrency (default 6)"
    )
    parser.add_argument(
        "--warm-passes",
        type=int,
        default=2,
        help="times the warm-path measurement runs in a row, to show it reproduces (default 2)",
    )
    parser.add_argument(
        "--wrk-cpus",
        default="auto",
        help="pin wrk to these CPUs (a taskset list, e.g. 1); auto: the last CPU when there are several; "
        "none: not pinned",
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "docs" / "benchmarks.md"),
        help="where to write the report",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the warm-path passes, sample the web workers with py-spy (one more run at c=32 each)",
    )
    args = parser.parse_args(argv)
    stages = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s): {', '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        cfg = BenchConfig.from_env(
            args.reps,
            warm_seconds=args.warm_seconds,
            warm_reps=args.warm_reps,
            warm_passes=args.warm_passes,
            wrk_cpus=_wrk_cpus(args.wrk_cpus),
            profile=args.profile,
        )
        text, ok = run(stages, cfg)
    except BenchError as exc:
        print(f"bench: ERROR: {exc}", file=sys.stderr)
        return 1
    print(text)
    if not args.no_write:
        with open(args.out, "w") as handle:
            handle.write(text)
        print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


def run(stages: list[str], cfg) -> tuple[str, bool]:
    began = time.monotonic()
    s = Session(cfg, containers.client())
    database.ensure_database(cfg.database_url)
    database.rebuild(cfg.database_url, s.env(), s.log("migrate"))
    s.create_tokens()
    described = machine.describe(s.dc, cfg.database_url)
    gunicorn = s.gunicorn_settings(WEB_WORKERS)
    containers.remove_all(s.dc)
    rows, loads, rss = [], [], memory.MemoryLog()

    def stage(name: str) -> bool:
        if name in stages:
            loads.append((name, machine.loadavg()))
            logger.info("stage %s (load average %s)", name, loads[-1][1])
            return True
        return False

    try:
        if stage("ingest"):
            ingest_rows, ingest_rss = ingest.run(s)
            rows += ingest_rows
            rss.after(INGESTED, mb=ingest_rss)
        s.reset()
        if set(stages) - {"ingest"}:
            rows += _service_stages(s, stages, stage, rss)
    finally:
        containers.remove_all(s.dc)
    loads.append(("end", machine.loadavg()))
    rows += rss.rows({INGESTED: BACKGROUND})
    configuration = describe_service(gunicorn)
    text = document(described, configuration, rows, s.sections, s.notes, loads, (time.monotonic() - began) / 60)
    return text, all(r.met is not False for r in rows)


def _service_stages(s: Session, stages: list[str], stage, rss: memory.MemoryLog) -> list:
    """The service under gunicorn with one background process: 2 web workers, then 4 (herd)."""
    rows = []
    worker = s.start_worker("worker")
    try:
        if {"warm", "cold", "replicas", "registry"} & set(stages):
            web = s.start_web("web", WEB_WORKERS)
            rss.started(BACKGROUND, [worker.pid])
            rss.started(f"web worker ({WEB_WORKERS} workers)", web.worker_pids())
            try:
                _require_auth(web)
                if stage("warm"):
                    rows += warm.run(s, web, summary(s.gunicorn_settings(WEB_WORKERS)))
                if stage("cold"):
                    rows += cold.run(s, web)
                if stage("replicas"):
                    rows += replicas.run(s, web)
                if stage("registry"):
                    rows += registry_scale.run(s, web)
                rss.after(f"web worker ({WEB_WORKERS} workers)", web.worker_pids())
            finally:
                web.stop()
        if stage("herd"):
            web = s.start_web("web-herd", herd.WORKERS)
            label = f"web worker ({herd.WORKERS} workers)"
            rss.started(label, web.worker_pids())
            rss.started(BACKGROUND, [worker.pid])
            try:
                rows += herd.run(s, web)
                rss.after(label, web.worker_pids())
            finally:
                web.stop()
        rss.after(BACKGROUND, [worker.pid])
    finally:
        worker.stop()
    return rows


def _wrk_cpus(choice: str) -> str:
    """wrk on a CPU of its own: it then moves less between cores and competes with one at most."""
    if choice == "none":
        return ""
    if choice == "auto":
        count = os.cpu_count() or 1
        return str(count - 1) if count > 1 else ""
    return choice


def _require_auth(web) -> None:
    """The figures are for the service with authentication on: an open API is a mistake here."""
    answer = requests.get(f"{web.base}/api/models", timeout=10)
    if answer.status_code != 401:
        raise BenchError(
            f"GET /api/models without a token answered {answer.status_code}, not 401: is AUTH_DISABLED set?"
        )


def summary(gunicorn: dict[str, str]) -> str:
    """The configuration in a few words, for the rows' names and the README."""
    return (
        f"{gunicorn['workers']} workers × {gunicorn['threads']} threads ({gunicorn['worker_class']}), "
        "auth on, log INFO, metrics on"
    )


def describe_service(gunicorn: dict[str, str]) -> list[tuple[str, str]]:
    return [
        (
            "Web",
            f"gunicorn with the project's gunicorn.conf.py: worker class {gunicorn['worker_class']}, "
            f"{gunicorn['workers']} workers × {gunicorn['threads']} threads, keep-alive {gunicorn['keepalive']} s "
            f"({herd.WORKERS} workers for the herd); one `flask worker` background process",
        ),
        ("Database", "PostgreSQL (the bench's own database, rebuilt by the migrations)"),
        (
            "Authentication",
            "on: Bearer tokens made with `flask tokens create`; the load sends a user's token "
            "(owner-scoped), the bench's own calls an admin token",
        ),
        ("Logging", "LOG_LEVEL=INFO, plain text: one request log line per request"),
        ("Metrics", "on (prometheus_client, multiprocess)"),
        (
            "Limits lifted",
            "RATE_LIMIT_PER_MINUTE=0, MAX_CONCURRENT_INFERENCES_PER_TOKEN=0 (would answer load with 429)",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
