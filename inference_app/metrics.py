"""Prometheus metrics: per-request figures from the web processes, the rest read from the database.

Under gunicorn each worker writes its samples to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py) and /metrics adds them up. Facts that belong to the whole deployment
(containers running, starts and stops by reason, Kafka ingestion) are read from the
registry and the background runner's heartbeat at scrape time, so every process agrees.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from .extensions import db
from .models import ACTIVE, EventKind, Heartbeat, ModelEvent, Replica, ReplicaStatus, ServedModel, Status, utcnow
from .services import load

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
COLD_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)

INFERENCE_REQUESTS = Counter(
    "inference_requests_total", "Inference requests by model and HTTP status", ["model_id", "status"]
)
INFERENCE_LATENCY = Histogram(
    "inference_request_duration_seconds",
    "Inference latency as the client saw it",
    ["cold_start"],
    buckets=LATENCY_BUCKETS,
)
COLD_START = Histogram(
    "inference_cold_start_duration_seconds",
    "Container start until the model answered its health check",
    buckets=COLD_BUCKETS,
)
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests by route and status", ["route", "status"])
WAITERS = Gauge("inference_start_waiters", "Requests waiting for a model to start", multiprocess_mode="livesum")

_children: dict[tuple, Any] = {}


def labelled(metric, *values: str):
    """metric.labels(*values), remembered: the per-request metrics skip its checks and lock after the first time.

    Nothing removes a labelled child here, so a remembered one is the one labels() would return.
    """
    key = (metric, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
        if len(_children) > 100_000:  # labels come from routes, model ids and statuses: never near this
            _children.clear()
    return found


def scrape_allowed(metrics_token: str, authorization: str | None) -> bool:
    """Whether a scrape may read /metrics: always without METRICS_TOKEN, else with it as a Bearer token."""
    if not metrics_token:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), metrics_token.encode())


def exposition(settings) -> bytes:
    """The text exposition for /metrics."""
    deployment = list(_deployment_families(settings))
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry.register(_Static(list(REGISTRY.collect())))
    registry.register(_Static(deployment))
    return generate_latest(registry)


class _Static:
    """Already-gathered metric families, as a collector."""

    def __init__(self, families):
        self._families = families

    def collect(self):
        return self._families


def _deployment_families(settings):
    active_models = ServedModel.status.in_([s.value for s in ACTIVE])
    running = db.session.scalar(
        select(func.count())
        .select_from(Replica)
        .join(ServedModel, ServedModel.id == Replica.model_id)
        .where(ServedModel.status == Status.RUNNING.value, Replica.status == ReplicaStatus.READY.value)
    )
    # a slot per replica, and one for a model starting from nothing (as the cap counts them)
    models, replicas, with_replicas = db.session.execute(
        select(func.count(ServedModel.id.distinct()), func.count(Replica.id), func.count(Replica.model_id.distinct()))
        .select_from(ServedModel)
        .outerjoin(Replica, Replica.model_id == ServedModel.id)
        .where(active_models)
    ).one()
    active = models + replicas - with_replicas
    gauge = GaugeMetricFamily("inference_containers", "Model containers (replicas) by state", labels=["state"])
    gauge.add_metric(["running"], running or 0)
    gauge.add_metric(["active"], active or 0)
    yield gauge
    yield GaugeMetricFamily("inference_containers_cap", "MAX_RUNNING_CONTAINERS", value=settings.max_running_containers)
    lifecycle = CounterMetricFamily(
        "inference_lifecycle_events",
        "Starts, stops by reason (idle, manual, eviction, failure) and more",
        labels=["kind"],
    )
    for kind, count in db.session.execute(select(ModelEvent.kind, func.count()).group_by(ModelEvent.kind)):
        lifecycle.add_metric([kind], count)
    yield lifecycle
    yield from _replica_families()
    beat = db.session.get(Heartbeat, "background")
    kafka = (beat.state or {}).get("kafka", {}) if beat is not None else {}
    applied = CounterMetricFamily("kafka_events_applied", "Events applied by the active listener since it started")
    applied.add_metric([], kafka.get("applied", 0) or 0)
    yield applied
    dead = CounterMetricFamily(
        "kafka_events_dead_lettered", "Events dead-lettered by the active listener since it started"
    )
    dead.add_metric([], kafka.get("dead_lettered", 0) or 0)
    yield dead
    if kafka.get("lag") is not None:
        yield GaugeMetricFamily("kafka_consumer_lag", "Records behind the end of the topics", value=kafka["lag"])
    up = GaugeMetricFamily("kafka_listener_connected", "1 when the listener is connected to the brokers")
    up.add_metric([], 1 if kafka.get("state") == "connected" else 0)
    yield up
    db.session.rollback()


def _replica_families():
    """Replicas by model and state, scale-ups and scale-downs by model, requests in flight by model."""
    replicas = GaugeMetricFamily(
        "inference_replicas", "Replicas of running models by state", labels=["model_id", "state"]
    )
    for model_id, state, count in db.session.execute(
        select(Replica.model_id, Replica.status, func.count()).group_by(Replica.model_id, Replica.status)
    ):
        replicas.add_metric([str(model_id), state], count)
    yield replicas
    for kind, name, text in (
        (EventKind.SCALED_UP, "inference_scale_ups", "Replicas added for the load, by model"),
        (EventKind.SCALED_DOWN, "inference_scale_downs", "Replicas drained and removed, by model"),
    ):
        family = CounterMetricFamily(name, text, labels=["model_id"])
        for model_id, count in db.session.execute(
            select(ModelEvent.model_id, func.count()).where(ModelEvent.kind == kind).group_by(ModelEvent.model_id)
        ):
            family.add_metric([str(model_id)], count)
        yield family
    in_flight = GaugeMetricFamily(
        "inference_in_flight_requests",
        "Requests in flight by model, summed over the web processes (as last reported, about every 0.5 s)",
        labels=["model_id"],
    )
    for model_id, total in sorted(load.in_flight(utcnow()).items()):
        in_flight.add_metric([str(model_id)], total)
    yield in_flight
