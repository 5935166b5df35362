"""One benchmark run: the configuration, the Docker client, the service processes, the notes.

The service runs as in production: authentication on (tokens made with its own CLI), request
logging at INFO, metrics on. Only its per-caller limits are lifted, since they would answer a
load generator with 429 (noted in the report).
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import docker
import requests

from . import containers, database
from .config import ROOT, BenchConfig, BenchError
from .processes import BIN, Process, Web, service_env, start_worker

OWNER = "bench"  # the user_id of every model the bench registers
LIMITS_LIFTED = {
    # the per-caller inference limit (requests per minute) and, where the service has it, the
    # per-token limit on concurrent inferences: both would answer the load generators with 429
    "RATE_LIMIT_PER_MINUTE": "0",
    "MAX_CONCURRENT_INFERENCES_PER_TOKEN": "0",
}
REALISTIC = {"AUTH_DISABLED": "false", "LOG_LEVEL": "INFO", "LOG_JSON": "false"}
GUNICORN_KEYS = ("worker_class", "workers", "threads", "keepalive")


@dataclass
class Session:
    cfg: BenchConfig
    dc: docker.DockerClient
    notes: list[str] = field(
        default_factory=lambda: [
            "The service ran with RATE_LIMIT_PER_MINUTE=0 and MAX_CONCURRENT_INFERENCES_PER_TOKEN=0 "
            "(where that setting exists): its per-caller limits would answer load with 429."
        ]
    )
    sections: list[tuple[str, str]] = field(default_factory=list)  # (title, Markdown) after the table
    overrides: dict[str, str] = field(default_factory=dict)
    http: requests.Session = field(default_factory=requests.Session)
    user_token: str = ""  # the owner's token: what the load generators send to the service

    def env(self, **overrides) -> dict[str, str]:
        return service_env(self.cfg.database_url, **{**REALISTIC, **LIMITS_LIFTED, **self.overrides, **overrides})

    def log(self, name: str):
        return self.cfg.artifacts / f"{name}.log"

    @property
    def user_authorization(self) -> str:
        return f"Bearer {self.user_token}"

    def create_tokens(self) -> None:
        """An admin token for the bench's API calls, a user token for the load (owner-scoped)."""
        admin = self._cli_token("--admin")
        self.user_token = self._cli_token("--user", OWNER)
        self.http.headers["Authorization"] = f"Bearer {admin}"

    def _cli_token(self, *who: str) -> str:
        done = subprocess.run(
            [str(BIN / "flask"), "tokens", "create", *who, "--name", "bench"],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
        )
        found = re.search(r"^token \d+ for .+: (\S+)$", done.stdout, re.MULTILINE)
        if done.returncode != 0 or found is None:
            raise BenchError(f"flask tokens create {' '.join(who)} failed: {done.stderr.strip()[-300:]}")
        return found.group(1)

    def start_web(self, name: str, workers: int, **overrides) -> Web:
        try:
            return Web(self.env(**overrides), self.log(name), workers)
        except AssertionError as exc:  # the wrapper's verdict, as the tests take it
            raise BenchError(str(exc)) from None

    def start_worker(self, name: str, **overrides) -> Process:
        return start_worker(self.env(**overrides), self.log(name))

    def gunicorn_settings(self, workers: int) -> dict[str, str]:
        """The web workers' settings as gunicorn resolves them from gunicorn.conf.py."""
        env = {
            **self.env(),
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.cfg.artifacts / "print-config"),
        }
        done = subprocess.run(
            [str(BIN / "gunicorn"), "--print-config", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        found = dict(re.findall(r"^(\w+)\s+= (.*)$", done.stdout, re.MULTILINE))
        return {key: found.get(key, "?") for key in GUNICORN_KEYS}

    def reset(self) -> None:
        """No containers of this instance, empty tables (the tokens stay)."""
        containers.remove_all(self.dc)
        database.empty_tables(self.cfg.database_url, keep=("api_tokens",))

    # -- the API, as a client sees it ----------------------------------------------------------------
    def call(self, web: Web, method: str, path: str, body: Any = None, ok=(200, 201)) -> Any:
        response = self.http.request(method, f"{web.base}{path}", json=body, timeout=120)
        if response.status_code not in ok:
            raise BenchError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def register(self, web: Web, **fields) -> int:
        body = {"user_id": OWNER, "model_name": "fast-echo", "version": "1"}
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

    def sign_in(self, web: Web) -> str:
        """A dashboard session cookie for the admin token (Cookie header value)."""
        browser = requests.Session()
        form = browser.get(f"{web.base}/login", timeout=30)
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form.text)
        token = self.http.headers["Authorization"].split(" ", 1)[1]
        answer = browser.post(
            f"{web.base}/login",
            data={"token": token, "next": "/", **({"csrf_token": csrf.group(1)} if csrf else {})},
            timeout=30,
            allow_redirects=False,
        )
        if answer.status_code not in (302, 303):
            raise BenchError(f"dashboard sign-in: {answer.status_code} {answer.text[:200]}")
        return "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
