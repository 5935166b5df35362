"""What the benchmark run needs to know: where PostgreSQL and Kafka are, names, repetitions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST_ECHO = "inference-bench/fast-echo:1"
IRIS = "inference-examples/iris:1"
# BENCH_INSTANCE names this run's containers apart (with BENCH_DATABASE, one per concurrent bench)
INSTANCE = os.environ.get("BENCH_INSTANCE", "bench")
PREFIX = INSTANCE
DATABASE = "inference_bench"  # BENCH_DATABASE overrides it (one database per concurrent bench)


class BenchError(RuntimeError):
    """The benchmark cannot go on (a service did not come up, a request failed)."""


@dataclass(frozen=True)
class BenchConfig:
    database_url: str
    kafka_bootstrap: str
    reps: int
    artifacts: Path
    warm_seconds: int = 2
    warm_reps: int = 6
    warm_passes: int = 2
    wrk_cpus: str = ""  # a taskset CPU list for wrk; "" leaves it to the scheduler
    profile: bool = False  # py-spy on the web workers after the warm-path passes

    @classmethod
    def from_env(cls, reps: int, **options) -> BenchConfig:
        server = os.environ.get("BENCH_DATABASE_SERVER") or _server_of(os.environ.get("DATABASE_URL", ""))
        if not server:
            raise BenchError("set DATABASE_URL (scripts/bench.sh does it with scripts/provision.sh)")
        kafka = os.environ.get("BENCH_KAFKA_BOOTSTRAP_SERVERS", "")
        if not kafka:
            raise BenchError("set BENCH_KAFKA_BOOTSTRAP_SERVERS (scripts/bench.sh does it with scripts/kafka.sh)")
        artifacts = ROOT / "test-artifacts" / "bench"
        artifacts.mkdir(parents=True, exist_ok=True)
        return cls(
            database_url=f"{server}/{os.environ.get('BENCH_DATABASE') or DATABASE}",
            kafka_bootstrap=kafka,
            reps=reps,
            artifacts=artifacts,
            **options,
        )


def _server_of(url: str) -> str:
    """postgresql+psycopg2://user@host:port/dbname -> postgresql+psycopg2://user@host:port"""
    return url.rsplit("/", 1)[0] if url.startswith("postgresql") and url.count("/") >= 3 else ""
