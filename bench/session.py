"""One benchmark run: the configuration, the Docker client, the service processes, the notes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import docker
import requests

from . import containers, database
from .config import BenchConfig, BenchError
from .processes import Process, Web, service_env, start_worker


@dataclass
class Session:
    cfg: BenchConfig
    dc: docker.DockerClient
    notes: list[str] = field(
        default_factory=lambda: [
            "The service ran with RATE_LIMIT_PER_MINUTE=0: its per-caller limit would answer load with 429."
        ]
    )
    overrides: dict[str, str] = field(default_factory=dict)
    http: requests.Session = field(default_factory=requests.Session)

    def env(self, **overrides) -> dict[str, str]:
        return service_env(self.cfg.database_url, **{**self.overrides, **overrides})

    def log(self, name: str):
        return self.cfg.artifacts / f"{name}.log"

    def start_web(self, name: str, workers: int, **overrides) -> Web:
        """gunicorn; if the API asks for credentials, run the bench with AUTH_DISABLED=true (noted)."""
        web = self._web(name, workers, **overrides)
        if (
            self.http.get(f"{web.base}/api/models", timeout=10).status_code == 401
            and "AUTH_DISABLED" not in self.overrides
        ):
            web.stop()
            self.overrides["AUTH_DISABLED"] = "true"
            self.notes.append(
                "The API answered 401: the service ran with AUTH_DISABLED=true (authentication not measured)."
            )
            web = self._web(name, workers, **overrides)
        return web

    def _web(self, name: str, workers: int, **overrides) -> Web:
        try:
            return Web(self.env(**overrides), self.log(name), workers)
        except AssertionError as exc:  # the wrapper's verdict, as the tests take it
            raise BenchError(str(exc)) from None

    def start_worker(self, name: str, **overrides) -> Process:
        return start_worker(self.env(**overrides), self.log(name))

    def reset(self) -> None:
        """No containers of this instance, empty tables."""
        containers.remove_all(self.dc)
        database.empty_tables(self.cfg.database_url)

    # -- the API, as a client sees it ----------------------------------------------------------------
    def call(self, web: Web, method: str, path: str, body: Any = None, ok=(200, 201)) -> Any:
        response = self.http.request(method, f"{web.base}{path}", json=body, timeout=120)
        if response.status_code not in ok:
            raise BenchError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def register(self, web: Web, **fields) -> int:
        body = {"user_id": "bench", "model_name": "fast-echo", "version": "1"}
        body.update(fields)
        return self.call(web, "POST", "/api/models", body)["id"]

    def wait_stopped(self, web: Web, model_id: int, timeout: float = 30) -> None:
        """Stopped in the registry and its container gone from Docker."""
        deadline = time.monotonic() + timeout
        name = containers.model_container(model_id)
        while True:
            status = self.call(web, "GET", f"/api/models/{model_id}")["status"]
            if status == "stopped" and not self.dc.containers.list(all=True, filters={"name": f"^/{name}$"}):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"model {model_id} did not stop within {timeout} s (status {status})")
            time.sleep(0.05)
