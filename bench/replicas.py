"""Replicas (issue 13): a model that serves one request at a time and takes 50 ms each.

It sleeps, so its figure does not depend on cores: one replica tops out at 20 requests/s.
The same load (concurrency 16 for 10 s, wrk, the owner's token) goes to two registrations of
it in the same run, one with max_replicas=1 and one with max_replicas=4, both with
min_replicas=1. Running replicas are counted from Docker (this instance's containers labelled
with the model's id) during the load and after it, until the model is back at min_replicas.

Each measured 10 s follows WARM_UP seconds of the same load, so the throughput is that of the
replicas the load settled on; the scale-up itself is reported beside it: the time from the
load's start until every replica ran, and the throughput of the warm-up (the scale-up in it).

While the service refuses the replica settings (400 naming the field), the scenario reports a
"not measured" row instead of failing the run.
"""

from __future__ import annotations

import logging
import threading
import time

import docker

from inference_app.config import ConfigError, Settings
from inference_app.runtime import labels

from .config import FAST_ECHO, INSTANCE, BenchError
from .processes import Web
from .report import Row, ms
from .session import OWNER, Session
from .wrk import WrkResult, run_wrk

logger = logging.getLogger(__name__)

NAME = "Replicas (one request at a time, 50 ms each; c=16 for 10 s)"
MODEL_ENV = {"ONE_AT_A_TIME": "1", "PREDICT_SLEEP_MS": "50"}
FIELDS = ("min_replicas", "max_replicas", "target_concurrency")
CONCURRENCY = 16
SECONDS = 10
WARM_UP = 8  # seconds of the same load before the measured ones: the scale-up window, the starts, slack
MIN_REPLICAS = 1
TARGET_CONCURRENCY = 1  # in flight per replica before another is added: this model serves one
TARGET_RATIO = 3.5
BACK_TIMEOUT = 180  # seconds to wait for the scale-down before reporting "not within"
# the service's settings whose sum bounds the time back to min_replicas: the scale-down delay
# and the interval of the check that applies it (names as the replicas feature defines them)
SCALE_DOWN_SETTINGS = ("scale_down_delay_seconds", "scale_check_interval_seconds")


def run(s: Session, web: Web) -> list[Row]:
    _make_room(s, web)
    single = _register(s, web, 1)
    if isinstance(single, str):
        s.notes.append(f"Replicas not measured: registering with {', '.join(FIELDS)} answered {single}.")
        return [Row(NAME, "throughput, max_replicas=4 over max_replicas=1", "not measured: replicas not supported")]
    several = _register(s, web, 4)
    if isinstance(several, str):
        raise BenchError(f"max_replicas=4 refused after max_replicas=1 was accepted: {several}")
    one = _load(s, web, single)
    s.call(web, "POST", f"/api/models/{single}/stop")  # its slot is the four replicas' (the owner's limit)
    four = _load(s, web, several)
    back = _time_back(s, several) if four.most > MIN_REPLICAS else None
    ratio = four.result.rps / one.result.rps
    bound = _scale_down_bound(s)
    return [
        Row(
            NAME,
            f"throughput, max_replicas=4 over max_replicas=1 (after {WARM_UP} s of the same load)",
            f"{ratio:.2f}×",
            "",
            f"{four.result.rps:,.1f} req/s vs {one.result.rps:,.1f} req/s",
            f"≥ {TARGET_RATIO}×",
            ratio >= TARGET_RATIO,
        ),
        Row(
            NAME,
            f"throughput during the first {WARM_UP} s (the scale-up in it), max_replicas=4 over 1",
            f"{four.warm_up.rps / one.warm_up.rps:.2f}×",
            "",
            f"{four.warm_up.rps:,.1f} req/s vs {one.warm_up.rps:,.1f} req/s",
        ),
        Row(
            NAME,
            "scale-up: from the load's start until 4 replicas ran",
            f"{four.scaled_after:.1f} s" if four.scaled_after is not None else f"not within {WARM_UP + SECONDS} s",
            "",
            "replicas counted from Docker every 0.1 s",
        ),
        Row(NAME, "p99 latency, max_replicas=1", ms(one.result.p99_s, 0), "", f"p50 {ms(one.result.p50_s, 0)}"),
        Row(
            NAME,
            "p99 latency, max_replicas=4",
            ms(four.result.p99_s, 0),
            "",
            f"p50 {ms(four.result.p50_s, 0)}; replicas running at most {four.most}",
        ),
        Row(
            NAME,
            f"time back to min_replicas={MIN_REPLICAS} after the load stops",
            _back_text(back, four.most),
            "",
            "replicas counted from Docker every 0.1 s",
            f"≤ scale-down delay + check interval ({bound:g} s)" if bound else "≤ scale-down delay + check interval",
            (back is not None and back <= bound) if bound else None,
        ),
    ]


def _make_room(s: Session, web: Web) -> None:
    """Stop the earlier stages' models: the four replicas need four of the owner's slots (MAX_RUNNING_PER_OWNER)."""
    for model in s.call(web, "GET", "/api/models?status=running&per_page=100")["items"]:
        s.call(web, "POST", f"/api/models/{model['id']}/stop")


def _back_text(back: float | None, most: int) -> str:
    if most <= MIN_REPLICAS:
        return f"not measured: it never ran more than {MIN_REPLICAS} replica"
    return f"{back:.1f} s" if back is not None else f"not within {BACK_TIMEOUT} s"


def _register(s: Session, web: Web, max_replicas: int) -> int | str:
    """The model's id, or the service's refusal (a 400 about one of the replica fields)."""
    body = {
        "user_id": OWNER,
        "model_name": f"one-at-a-time-{max_replicas}",
        "image": FAST_ECHO,
        "env": MODEL_ENV,
        "min_replicas": MIN_REPLICAS,
        "max_replicas": max_replicas,
        "target_concurrency": TARGET_CONCURRENCY,
    }
    response = s.http.post(f"{web.base}/api/models", json=body, timeout=60)
    if response.status_code == 400 and any(f in response.text for f in FIELDS):
        return f"400 ({_message(response)})"
    if response.status_code not in (200, 201):
        raise BenchError(f"POST /api/models: {response.status_code} {response.text[:300]}")
    return response.json()["id"]


def _message(response) -> str:
    """The API's error message up to its first ';' (the rest lists every allowed field)."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text
    return message.split(";", 1)[0].strip()[:200]


def running(dc: docker.DockerClient, model_id: int) -> int:
    """The model's running containers of this instance, as Docker sees them."""
    found = dc.containers.list(
        filters={"status": "running", "label": [f"{labels.INSTANCE}={INSTANCE}", f"{labels.MODEL_ID}={model_id}"]}
    )
    return len(found)


class Loaded:
    """wrk's results (warm-up, then the measured run), the most replicas seen running, and when."""

    def __init__(self, warm_up: WrkResult, result: WrkResult, most: int, scaled_after: float | None):
        self.warm_up = warm_up
        self.result = result
        self.most = most
        self.scaled_after = scaled_after  # seconds from the load's start until `most` ran


def _load(s: Session, web: Web, model_id: int) -> Loaded:
    s.call(web, "POST", f"/api/models/{model_id}/start")
    _wait_replicas(s, model_id, MIN_REPLICAS, 60)
    most = [running(s.dc, model_id), 0.0]
    done = threading.Event()
    began = time.monotonic()

    def count() -> None:
        while not done.wait(0.1):
            seen = running(s.dc, model_id)
            if seen > most[0]:
                most[:] = [seen, time.monotonic() - began]

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    try:
        url = f"{web.base}/api/models/{model_id}/infer"
        warm_up = run_wrk(url, CONCURRENCY, WARM_UP, s.user_authorization, s.cfg.wrk_cpus)
        result = run_wrk(url, CONCURRENCY, SECONDS, s.user_authorization, s.cfg.wrk_cpus)
    finally:
        done.set()
        counter.join()
    for run in (warm_up, result):
        if run.errors or run.non2xx:
            raise BenchError(f"replicas: {run.errors} socket errors, {run.non2xx} non-2xx answers")
    logger.info(
        "replicas model %s: %.1f req/s (warm-up %.1f), p99 %.0f ms, at most %s running after %.1f s",
        model_id,
        result.rps,
        warm_up.rps,
        result.p99_s * 1e3,
        most[0],
        most[1],
    )
    return Loaded(warm_up, result, most[0], most[1] if most[0] > MIN_REPLICAS else None)


def _time_back(s: Session, model_id: int) -> float | None:
    """Seconds from the end of the load until min_replicas are running, or None."""
    began = time.monotonic()
    return time.monotonic() - began if _wait_replicas(s, model_id, MIN_REPLICAS, BACK_TIMEOUT) else None


def _wait_replicas(s: Session, model_id: int, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while running(s.dc, model_id) != count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _scale_down_bound(s: Session) -> float:
    """The scale-down delay plus one check interval from the service's settings; 0 if unknown."""
    try:
        settings = Settings.from_env(s.env())
    except ConfigError:
        return 0.0
    values = [getattr(settings, name, None) for name in SCALE_DOWN_SETTINGS]
    return float(sum(values)) if all(isinstance(v, (int, float)) for v in values) else 0.0
