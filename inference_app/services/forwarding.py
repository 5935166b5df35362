"""Forwarding an inference request to a model container and streaming its answer back."""

from __future__ import annotations

import functools
import http.client
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import urllib3
from urllib3.util import Retry, parse_url

from ..errors import ConnectionBroken, ContainerFailed, InferenceTimeout, ModelUnreachable, NoAnswer
from ..runtime import Endpoint

FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "Accept-Encoding", "Content-Encoding", "User-Agent")
RETURNED_RESPONSE_HEADERS = ("Content-Type", "Content-Encoding", "Content-Language", "Cache-Control", "ETag")
BUFFER_LIMIT = 256 * 1024  # answers up to this size are read whole; larger or chunked ones stream
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 2.0
NO_RETRIES = Retry(False, redirect=False)  # what retries=False becomes in urllib3, made once


@dataclass
class Upstream:
    """The model's answer: status, the headers we pass on, and the body (whole or streamed)."""

    status: int
    headers: dict[str, str]
    body: bytes | None
    stream: Iterator[bytes] | None


def forward(
    http: urllib3.PoolManager,
    endpoint: Endpoint,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    request_id: str,
    read_timeout: float,
    query: str = "",
) -> Upstream:
    """POST body to the model; ModelUnreachable if nothing was sent, other errors otherwise."""
    out = {name: headers[name] for name in FORWARDED_REQUEST_HEADERS if name in headers}
    out["X-Request-ID"] = request_id
    target = _request_uri(path) + (f"?{query}" if query else "")  # the query comes from urlencode
    try:
        # the endpoint's pool straight away: what http.request would do after parsing a URL we built
        pool = http.connection_from_host(endpoint.host, port=endpoint.port, scheme="http")
        response = pool.urlopen(
            "POST",
            target,
            body=body,
            headers=out,
            timeout=_timeout(read_timeout),
            retries=NO_RETRIES,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
        )
    except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
        raise ModelUnreachable(f"could not connect to the model container: {exc.__class__.__name__}") from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise InferenceTimeout(f"the model did not answer within {read_timeout:g} s") from exc
    except urllib3.exceptions.ProtocolError as exc:
        if _refused(exc):
            raise ModelUnreachable("the model container refused the connection") from exc
        if _closed_without_answer(exc):
            raise NoAnswer("the model container closed the connection without answering") from exc
        raise ConnectionBroken(f"the model container broke the connection: {_reason(exc)}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise ContainerFailed(f"talking to the model container failed: {_reason(exc)}") from exc
    passed = {name: response.headers[name] for name in RETURNED_RESPONSE_HEADERS if name in response.headers}
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT:
        try:
            data = response.read()
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise InferenceTimeout(f"the model did not answer within {read_timeout:g} s") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ContainerFailed(f"the model's answer was cut off: {_reason(exc)}") from exc
        finally:
            response.release_conn()
        return Upstream(response.status, passed, data, None)
    return Upstream(response.status, passed, None, _stream(response))


@functools.lru_cache(maxsize=256)
def _request_uri(path: str) -> str:
    """The path as urllib3 sends it (invalid characters percent-encoded), worked out once per path."""
    return parse_url(path).request_uri


@functools.lru_cache(maxsize=64)
def _timeout(read_timeout: float) -> urllib3.Timeout:
    return urllib3.Timeout(connect=CONNECT_TIMEOUT, read=read_timeout)


def _stream(response) -> Iterator[bytes]:
    try:
        yield from response.stream(CHUNK, decode_content=False)
    finally:
        response.release_conn()


def _refused(exc: Exception) -> bool:
    cause = exc.args[1] if len(exc.args) > 1 else None
    return isinstance(cause, ConnectionRefusedError)


def _closed_without_answer(exc: Exception) -> bool:
    cause = exc.args[1] if len(exc.args) > 1 else None
    return isinstance(cause, http.client.RemoteDisconnected)


def _reason(exc: Exception) -> str:
    return exc.__class__.__name__
