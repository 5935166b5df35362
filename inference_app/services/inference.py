"""Inference: make sure the model is ready, forward the request, account for the activity."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..errors import ConnectionBroken, ModelUnreachable, NoAnswer, QueueFull
from ..extensions import db
from ..metrics import INFERENCE_LATENCY, INFERENCE_REQUESTS, labelled
from . import balancing, lifecycle, rate_limit, registry
from .activity import Activity
from .auth import Principal, sees_everything
from .context import InferenceContext, context
from .forwarding import forward
from .model_view import ModelView, Route

logger = logging.getLogger(__name__)

SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
STOP_WAIT_POLL = 0.05
NO_ANSWER_PAUSE = 0.05  # before trying a live instance again that closed without answering
CONNECT_RETRIES = 3  # connects again to a live instance that a connection could not be made to
CONNECT_PAUSE = 0.25  # times the retry number: 0.25, 0.5, 0.75 s


def request_id_from(incoming: str | None) -> str:
    """The caller's X-Request-ID if it is safe to log and forward, else a fresh one."""
    if incoming and SAFE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return fresh_request_id()


def fresh_request_id() -> str:
    """uuid.uuid4().hex, without building a UUID object: 16 random bytes with the version 4 and variant bits."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


@dataclass
class InferenceResult:
    status: int
    headers: dict[str, str]
    body: bytes | None
    stream: Iterator[bytes] | None
    cold: bool
    waited_s: float
    model_id: int
    version: str
    route: Route | None = None  # the replica it went to


def admit(model_id: int, version: str | None, caller: Principal) -> ModelView:
    """The way in for every inference (API and dashboard): the caller's rate limit, then resolve."""
    limiter = context().rate_limiter
    if limiter.per_minute > 0:  # the key is made only for a limit that counts it
        limiter.check(rate_limit.key_of(caller))
    return resolve(model_id, version, caller)


def resolve(model_id: int, version: str | None, caller: Principal | None) -> ModelView:
    """The model version an inference goes to (registry.model_for_inference), cached while running."""
    scope = None if sees_everything(caller) else caller.user_id
    key = (model_id, version, scope)
    running = context().running_models
    view = running.get(key)
    if view is None:
        try:
            view = ModelView.of(registry.model_for_inference(model_id, version, visible_to=caller))
        except BaseException:
            running.abandon(key)
            raise
        running.put(key, view)
    return view


def fresh_view(model_id: int) -> ModelView:
    context().running_models.forget(model_id)
    return ModelView.of(registry.get_model(model_id, fresh=True))


def infer(
    model: ModelView, body: bytes, headers: Mapping[str, str], request_id: str, query: str = ""
) -> InferenceResult:
    """Forward one inference request, starting the model's container first if needed."""
    model_id = model.id
    began = time.monotonic()
    ctx = context()  # looked up once: the steps below get it passed
    activity = ctx.activity
    model = _enter(model, ctx, activity)
    try:
        result = _infer_entered(ctx, activity, model, body, headers, request_id, query)
    except BaseException as exc:
        _leave(model_id, began, getattr(exc, "status", 500), cold=False, activity=activity)
        raise
    if result.stream is None:
        _leave(model_id, began, result.status, result.cold, activity, result.route)
    else:
        result.stream = _leave_after(result.stream, model_id, began, result.status, result.cold, result.route)
    return result


def _enter(model: ModelView, ctx: InferenceContext, activity: Activity) -> ModelView:
    """Count the request in; while a stopper holds the model, wait for the stop to finish."""
    deadline = time.monotonic() + ctx.settings.queue_timeout_seconds
    waited = False
    while not activity.enter(model.id):
        if time.monotonic() > deadline:
            raise QueueFull("the model is being stopped; try again", retry_after=2)
        waited = True
        time.sleep(STOP_WAIT_POLL)
    return fresh_view(model.id) if waited else model  # it was stopped while we waited


def _leave(model_id: int, began: float, status: int, cold: bool, activity=None, route: Route | None = None) -> None:
    """Count the request out: the activity ledger (last use, minute counters) and the metrics."""
    seconds = time.monotonic() - began
    activity = activity or context().activity
    if route is not None:
        balancing.leave(route, activity)
    activity.leave(model_id, round(seconds * 1000), status >= 500, cold)
    labelled(INFERENCE_REQUESTS, str(model_id), str(status)).inc()
    labelled(INFERENCE_LATENCY, "true" if cold else "false").observe(seconds)


def _leave_after(
    stream: Iterator[bytes], model_id: int, began: float, status: int, cold: bool, route: Route | None
) -> Iterator[bytes]:
    activity = context().activity
    try:
        yield from stream
    finally:
        _leave(model_id, began, status, cold, activity, route)


def _infer_entered(
    ctx: InferenceContext, activity: Activity, model: ModelView, body: bytes, headers, request_id: str, query: str
) -> InferenceResult:
    cold = False
    waited = 0.0
    avoid: set[str] = set()  # instances that refused or vanished under this request
    attempts, attempt, connect_retries = 2, 0, 0
    while attempt < attempts:
        attempt += 1
        readiness = lifecycle.ensure_ready(model)
        cold = cold or readiness.cold
        waited += readiness.waited_s
        predict_path, model_id, version = model.predict_path, model.id, model.version
        # a warm request has no session: asking for one would make it, and its teardown, for nothing
        if db.session.registry.has() and db.session().in_transaction():
            db.session.commit()  # no transaction stays open while the model computes
        routes = () if readiness.cold else model.routes
        route = balancing.enter(routes, readiness.endpoint, activity, avoid)
        try:
            upstream = forward(
                ctx.http,
                route.endpoint,
                predict_path,
                body,
                headers,
                request_id,
                ctx.settings.infer_timeout_seconds,
                query,
            )
        except (ModelUnreachable, ConnectionBroken) as exc:
            balancing.leave(route, activity)
            if attempt == attempts:
                raise
            # Something was sent over a broken connection: repeat it only on another replica, and
            # only if this one is gone (never twice to a model that may have crashed on it).
            # a broken connection, or one closed without an answer (as a proxy does for an instance
            # being killed): let the runtime see the instance end before judging it
            broken = isinstance(exc, (ConnectionBroken, NoAnswer))
            gone = lifecycle.report_unreachable(model_id, route.endpoint, settle=broken)
            others = [r for r in routes if r.endpoint.instance_id != route.endpoint.instance_id]
            if isinstance(exc, ModelUnreachable) and not gone and not others and connect_retries < CONNECT_RETRIES:
                # no connection was made, so nothing was sent, and the instance is alive: a server
                # whose accept queue a herd overflowed (pods are reached directly, with no proxy
                # in front to absorb it). Connect again after a pause, a few times.
                connect_retries += 1
                attempts += 1
                logger.info(
                    "model %s: could not connect to replica %s (%s); request %s connects again",
                    model_id,
                    route.replica,
                    exc.message,
                    request_id,
                )
                time.sleep(CONNECT_PAUSE * connect_retries)
                continue
            if isinstance(exc, NoAnswer) and not gone:
                # closed before any answer, the instance alive (a stale pooled connection, a proxy whose
                # dial to an overloaded server failed): the model never answered it, so try once more
                logger.info(
                    "model %s: no answer from replica %s; request %s tries again", model_id, route.replica, request_id
                )
                time.sleep(NO_ANSWER_PAUSE)
                continue
            if (not gone and (broken or not others)) or (broken and not others):
                raise
            avoid.add(route.endpoint.instance_id)
            if others:
                logger.info(
                    "model %s: replica %s failed; request %s goes to another", model_id, route.replica, request_id
                )
            else:
                logger.info("model %s was gone; starting it again for request %s", model_id, request_id)
                model = fresh_view(model_id)
            continue
        except BaseException:
            balancing.leave(route, activity)
            raise
        return InferenceResult(
            status=upstream.status,
            headers=upstream.headers,
            body=upstream.body,
            stream=upstream.stream,
            cold=cold,
            waited_s=waited,
            model_id=model_id,
            version=version,
            route=route,
        )
    raise AssertionError("unreachable: the last attempt raises")
