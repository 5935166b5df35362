"""Cold start: a stopped model's first inference through the service vs a bare start of the same container.

The baseline does the least anyone must: create and start the same container (the service's
own Docker calls, settings and isolated network, under an instance name of its own, so only
the lifecycle around them is compared), poll its health path every 10 ms, and send the same
first request. (The isolated network itself costs Docker about 70 ms per start over the
default bridge on the project's machine; that is the containment's price, not the lifecycle's.)
Two models: the iris example (ready in a few hundred ms) and the bench model told to become
ready 2 s after it starts (READY_AFTER_MS), like real V2 and MLflow servers that load weights.
Repetitions alternate which goes first, and each timed start follows the removal of the
previous container of its kind and a pause of SETTLE seconds, so neither pays for the engine
still tearing the other's container down.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import urllib3

from inference_app.config import Settings
from inference_app.runtime import InstanceSpec
from inference_app.runtime.docker import DockerRuntime
from inference_app.services.validation import nano_cpus
from inference_app.units import parse_memory

from .config import FAST_ECHO, INSTANCE, IRIS, ROOT, BenchError
from .processes import Web
from .report import Row, ms
from .session import Session
from .stats import median, ms_spread

logger = logging.getLogger(__name__)

TARGET_ADDED_S = 0.050
SETTLE = 0.5
POLL_EVERY = 0.010  # the baseline's health polling
READY_AFTER_MS = 2000
HEADERS = {"Content-Type": "application/json"}
POLL_TIMEOUT = urllib3.Timeout(connect=0.5, read=1.0)  # the service's health-check timeouts


@dataclass(frozen=True)
class Subject:
    """A model to start cold: what is registered and what the baseline runs."""

    title: str
    model_name: str
    image: str
    body: bytes
    env: dict[str, str] = field(default_factory=dict)


SUBJECTS = (
    Subject(
        "Cold start (iris example)",
        "iris",
        IRIS,
        (ROOT / "examples/models/iris/example-request.json").read_bytes(),
    ),
    Subject(
        f"Cold start (a model ready {READY_AFTER_MS / 1000:g} s after it starts)",
        "slow-ready",
        FAST_ECHO,
        b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
        {"READY_AFTER_MS": str(READY_AFTER_MS)},
    ),
)


def through_service(s: Session, web: Web, model_id: int, body: bytes) -> float:
    """Stop the model, then time its first inference (which starts the container)."""
    s.call(web, "POST", f"/api/models/{model_id}/stop")
    s.wait_stopped(web, model_id)
    time.sleep(SETTLE)
    began = time.perf_counter()
    response = s.http.post(
        f"{web.base}/api/models/{model_id}/infer",
        data=body,
        headers={**HEADERS, "Authorization": s.user_authorization},
        timeout=120,
    )
    took = time.perf_counter() - began
    cold = response.headers.get("X-Cold-Start")
    if response.status_code != 200 or cold != "true":
        raise BenchError(f"cold infer: {response.status_code} cold={cold} {response.text[:200]}")
    return took


class Bare:
    """The baseline: the same container created and started by the runtime's Docker calls, nothing else."""

    def __init__(self, s: Session, subject: Subject):
        self.s = s
        self.subject = subject
        self.http = urllib3.PoolManager(retries=False)
        settings = Settings.from_env({**s.env(), "INSTANCE_NAME": f"{INSTANCE}bare"})
        self.runtime = DockerRuntime(settings)
        self.spec = InstanceSpec(
            model_id=1,
            user_id="bench",
            version="1",
            image=subject.image,
            port=8080,
            env=dict(subject.env),
            memory_bytes=parse_memory("DEFAULT_MEMORY", settings.default_memory),
            nano_cpus=nano_cpus(settings.default_cpus),
            pids_limit=settings.pids_limit,
            read_only=settings.read_only_rootfs,
        )
        self.instance_id: str | None = None

    def remove(self) -> None:
        if self.instance_id is not None:
            self.runtime.remove(self.instance_id, timeout=0)
            self.instance_id = None

    def start(self) -> float:
        """create + start, health polling every 10 ms, the first predict."""
        self.remove()
        time.sleep(SETTLE)
        began = time.perf_counter()
        instance = self.runtime.start(self.spec)
        self.instance_id = instance.instance_id
        endpoint = instance.endpoint
        while endpoint is None:  # the port is published a moment after the start
            endpoint = self.runtime.inspect(instance.instance_id).endpoint
        base = endpoint.base_url
        while True:
            try:
                health = self.http.request("GET", base + "/health", timeout=POLL_TIMEOUT)
                if health.status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.perf_counter() > began + 60:
                raise BenchError("bare container never became healthy")
            time.sleep(POLL_EVERY)
        answer = self.http.request("POST", base + "/predict", body=self.subject.body, headers=HEADERS)
        took = time.perf_counter() - began
        if answer.status != 200 or not json.loads(answer.data):
            raise BenchError(f"bare predict: {answer.status}")
        return took


def run(s: Session, web: Web) -> list[Row]:
    rows = []
    for subject in SUBJECTS:
        rows += measure(s, web, subject)
    return rows


def measure(s: Session, web: Web, subject: Subject) -> list[Row]:
    model_id = s.register(web, model_name=subject.model_name, image=subject.image, env=subject.env)
    baseline = Bare(s, subject)
    through_service(s, web, model_id, subject.body)  # untimed: image in the page cache, code paths warm
    baseline.start()
    service, bare = [], []
    for rep in range(s.cfg.reps):
        if rep % 2 == 0:
            bare.append(baseline.start())
            service.append(through_service(s, web, model_id, subject.body))
        else:
            service.append(through_service(s, web, model_id, subject.body))
            bare.append(baseline.start())
        logger.info(
            "%s rep %s: service %.0f ms, bare docker %.0f ms",
            subject.model_name,
            rep + 1,
            service[-1] * 1e3,
            bare[-1] * 1e3,
        )
    s.call(web, "POST", f"/api/models/{model_id}/stop")
    baseline.remove()
    added = [a - b for a, b in zip(service, bare, strict=True)]
    return [
        Row(
            subject.title,
            "added by the service",
            ms(median(added)),
            ms_spread(added, 0),
            f"bare start of the same container, 10 ms polling {ms(median(bare), 0)}",
            f"≤ {TARGET_ADDED_S * 1e3:.0f} ms",
            median(added) <= TARGET_ADDED_S,
        ),
        Row(
            subject.title,
            "first inference through the service",
            ms(median(service), 0),
            ms_spread(service, 0),
        ),
        Row(
            subject.title,
            "bare create + start (same container) + health every 10 ms + predict",
            ms(median(bare), 0),
            ms_spread(bare, 0),
        ),
    ]
