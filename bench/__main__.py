"""`python -m bench`: run the stages, print the Markdown table, write docs/benchmarks.md.

Order: ingestion (its own `flask worker` processes), then the service with 2 web workers and
a background process (warm path, cold start, registry scale, memory), then 4 web workers (herd).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import (
    cold,
    containers,
    database,
    herd,
    ingest,
    machine,
    memory,
    registry_scale,
    warm,
)
from .config import ROOT, BenchConfig, BenchError
from .report import document
from .session import Session

STAGES = ("ingest", "warm", "cold", "registry", "herd")
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
    parser.add_argument(
        "--out",
        default=str(ROOT / "docs" / "benchmarks.md"),
        help="where to write the report",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    stages = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s): {', '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        text, ok = run(stages, BenchConfig.from_env(args.reps))
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
    described = machine.describe(s.dc, cfg.database_url)
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
    text = document(described, rows, s.notes, loads, (time.monotonic() - began) / 60)
    return text, all(r.met is not False for r in rows)


def _service_stages(s: Session, stages: list[str], stage, rss: memory.MemoryLog) -> list:
    """The service under gunicorn with one background process: 2 web workers, then 4 (herd)."""
    rows = []
    worker = s.start_worker("worker")
    try:
        if {"warm", "cold", "registry"} & set(stages):
            web = s.start_web("web", 2)
            rss.started(BACKGROUND, [worker.pid])
            rss.started("web worker (2 workers)", web.worker_pids())
            try:
                if stage("warm"):
                    _, direct, service = warm.start_fast_model(s, web)
                    rows += warm.rows(warm.measure(s, direct, service, web.worker_pids()))
                if stage("cold"):
                    rows += cold.run(s, web)
                if stage("registry"):
                    rows += registry_scale.run(s, web)
                rss.after("web worker (2 workers)", web.worker_pids())
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


if __name__ == "__main__":
    sys.exit(main())
