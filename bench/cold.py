"""Cold start: the example model's first inference through the service vs a bare docker-py start.

The baseline does what the service must do at the least: create and start the container from
the same image, poll its health path on the same schedule (the service's backoff_delays), and
send the same first request. Repetitions alternate which goes first, and each timed start
follows the removal of the previous container of its kind and a pause of SETTLE seconds, so
neither pays for the engine still tearing the other's container down.
"""

from __future__ import annotations

import json
import logging
import time

import urllib3

from inference_app.runtime import labels
from inference_app.runtime.readiness import backoff_delays

from .config import INSTANCE, IRIS, ROOT, BenchError
from .processes import Web
from .report import Row, ms
from .session import Session
from .stats import median, ms_spread

logger = logging.getLogger(__name__)

TARGET_ADDED_S = 0.050
SETTLE = 0.5
BODY = (ROOT / "examples/models/iris/example-request.json").read_bytes()
HEADERS = {"Content-Type": "application/json"}
POLL_TIMEOUT = urllib3.Timeout(connect=0.5, read=1.0)  # the service's health-check timeouts


def through_service(s: Session, web: Web, model_id: int) -> float:
    """Stop the model, then time its first inference (which starts the container)."""
    s.call(web, "POST", f"/api/models/{model_id}/stop")
    s.wait_stopped(web, model_id)
    time.sleep(SETTLE)
    began = time.perf_counter()
    response = s.http.post(
        f"{web.base}/api/models/{model_id}/infer",
        data=BODY,
        headers=HEADERS,
        timeout=120,
    )
    took = time.perf_counter() - began
    cold = response.headers.get("X-Cold-Start")
    if response.status_code != 200 or cold != "true":
        raise BenchError(f"cold infer: {response.status_code} cold={cold}")
    return took


class Bare:
    """The baseline: the same image started with docker-py and nothing else."""

    def __init__(self, s: Session):
        self.s = s
        self.http = urllib3.PoolManager(retries=False)
        self.container = None

    def remove(self) -> None:
        if self.container is not None:
            self.container.remove(force=True)
            self.container = None

    def start(self) -> float:
        """create + start, health polling on the service's schedule, the first predict."""
        self.remove()
        time.sleep(SETTLE)
        began = time.perf_counter()
        self.container = self.s.dc.containers.create(
            IRIS,
            detach=True,
            ports={"8080/tcp": ("127.0.0.1", None)},
            labels={labels.INSTANCE: INSTANCE},
        )
        self.container.start()
        self.container.reload()
        port = self.container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        base = f"http://127.0.0.1:{port}"
        for delay in backoff_delays():
            try:
                health = self.http.request("GET", base + "/health", timeout=POLL_TIMEOUT)
                if health.status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.perf_counter() > began + 60:
                raise BenchError("bare container never became healthy")
            time.sleep(delay)
        answer = self.http.request("POST", base + "/predict", body=BODY, headers=HEADERS)
        took = time.perf_counter() - began
        if answer.status != 200 or "predictions" not in json.loads(answer.data):
            raise BenchError(f"bare predict: {answer.status}")
        return took


def run(s: Session, web: Web) -> list[Row]:
    model_id = s.register(web, model_name="iris", image=IRIS)
    baseline = Bare(s)
    through_service(s, web, model_id)  # untimed: image in the page cache, code paths warm
    baseline.start()
    service, bare = [], []
    for rep in range(s.cfg.reps):
        if rep % 2 == 0:
            bare.append(baseline.start())
            service.append(through_service(s, web, model_id))
        else:
            service.append(through_service(s, web, model_id))
            bare.append(baseline.start())
        logger.info(
            "cold rep %s: service %.0f ms, bare docker %.0f ms",
            rep + 1,
            service[-1] * 1e3,
            bare[-1] * 1e3,
        )
    s.call(web, "POST", f"/api/models/{model_id}/stop")
    baseline.remove()
    added = [a - b for a, b in zip(service, bare, strict=True)]
    name = "Cold start (iris example)"
    return [
        Row(
            name,
            "added by the service",
            ms(median(added)),
            ms_spread(added, 0),
            f"bare docker-py {ms(median(bare), 0)}",
            "≤ 50 ms",
            median(added) <= TARGET_ADDED_S,
        ),
        Row(
            name,
            "first inference through the service",
            ms(median(service), 0),
            ms_spread(service, 0),
        ),
        Row(
            name,
            "bare create + start + health + predict",
            ms(median(bare), 0),
            ms_spread(bare, 0),
        ),
    ]
