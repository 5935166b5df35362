"""A connection closed before any answer is tried once more; one that answered is never repeated."""

from __future__ import annotations

import http.client
import os
import socket
import threading

import pytest
import urllib3
from conftest import managed_containers

from inference_app.errors import NoAnswer
from inference_app.runtime import Endpoint
from inference_app.services.forwarding import forward


def _read_whole_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length and (chunk := conn.recv(65536)):
        body += chunk


def _closing_server() -> tuple[socket.socket, threading.Thread]:
    """A real server that reads a request and closes the connection without a byte of answer."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        _read_whole_request(conn)  # unread bytes would make close() a reset, not a clean close
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_a_close_without_answer_is_named_no_answer():
    server, thread = _closing_server()
    endpoint = Endpoint("127.0.0.1", server.getsockname()[1], "x")
    with pytest.raises(NoAnswer):
        forward(urllib3.PoolManager(retries=False), endpoint, "/predict", b"{}", {}, "rid", 5.0)
    thread.join(timeout=5)
    server.close()


class _DropFirstPool(urllib3.HTTPConnectionPool):
    """Fault injection: the first request's connection closes without an answer, as a stale one does."""

    def urlopen(self, method, url, *args, **kwargs):
        if _DropFirst.dropped == 0 and url.endswith("/predict"):
            _DropFirst.dropped += 1
            raise urllib3.exceptions.ProtocolError(
                "Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection without response")
            )
        return super().urlopen(method, url, *args, **kwargs)


class _DropFirst(urllib3.PoolManager):
    """Pools of _DropFirstPool, wherever the request enters urllib3 (PoolManager.request or a pool)."""

    dropped = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = {"http": _DropFirstPool}


def test_a_live_model_that_closed_without_answering_is_asked_once_more(app, client, register, docker_client):
    model = register()
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    pool = app.extensions["inference"]._http
    pool._pool, pool._pid = _DropFirst(num_pools=4, maxsize=4, retries=False), os.getpid()
    answer = client.post(f"/api/models/{model['id']}/infer", json={"once": True})
    assert answer.status_code == 200 and answer.get_json()["echo"] == {"once": True}
    assert _DropFirst.dropped == 1
    [container] = managed_containers(docker_client, model["id"])
    assert container.logs().decode().count("POST /predict") == 1  # the model saw it once


class _RefuseFirstPool(urllib3.HTTPConnectionPool):
    """Fault injection: the first connects to /predict time out, as against a server whose accept queue a herd filled."""

    def urlopen(self, method, url, *args, **kwargs):
        if _RefuseFirst.refused < _RefuseFirst.times and url.endswith("/predict"):
            _RefuseFirst.refused += 1
            raise urllib3.exceptions.ConnectTimeoutError(self, f"Connection to {self.host} timed out. (injected)")
        return super().urlopen(method, url, *args, **kwargs)


class _RefuseFirst(urllib3.PoolManager):
    refused = 0
    times = 0

    def __init__(self, times: int, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _RefuseFirst.refused, _RefuseFirst.times = 0, times
        self.pool_classes_by_scheme = {"http": _RefuseFirstPool}


@pytest.mark.parametrize(("failures", "status"), [(3, 200), (4, 502)])
def test_a_live_model_that_could_not_be_connected_to_is_connected_to_again(
    app, client, register, docker_client, failures, status
):
    model = register()
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    pool = app.extensions["inference"]._http
    pool._pool, pool._pid = _RefuseFirst(failures, num_pools=4, maxsize=4, retries=False), os.getpid()
    answer = client.post(f"/api/models/{model['id']}/infer", json={"n": 1})
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert _RefuseFirst.refused == failures  # three more connects, then the error is the client's
    [container] = managed_containers(docker_client, model["id"])
    assert container.logs().decode().count("POST /predict") == (1 if status == 200 else 0)
    assert client.get(f"/api/models/{model['id']}").get_json()["status"] == "running"  # alive: not marked gone
