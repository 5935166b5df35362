"""The warm path's anchors, in front of the same model container as the service.

- nginx (Debian's nginx-light) with a keep-alive upstream: the practical limit of any proxy;
- bench/minimal_proxy.py, a minimal Flask + urllib3 proxy run by gunicorn with the service's
  own gunicorn.conf.py (same workers, threads and worker class): the floor of our stack.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import requests

from .config import BenchError
from .processes import BIN, Process, free_port

NGINX_CONF = """\
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream model {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def _wait_answering(url: str, process: Process, children: int = 0) -> None:
    """Until `url` answers over HTTP and the process has `children` (gunicorn's workers)."""
    deadline = time.monotonic() + 60
    while True:
        if len(process.children()) >= children:
            try:
                requests.get(url, timeout=5)
                return
            except requests.RequestException:
                pass
        if not process.alive() or time.monotonic() > deadline:
            raise BenchError(f"{url} did not come up; see {process.log_path}")
        time.sleep(0.1)


class MinimalProxy:
    """gunicorn -c gunicorn.conf.py bench.minimal_proxy:app, in front of one model."""

    def __init__(self, env: dict[str, str], log: Path, workers: int, upstream: str):
        self.port = free_port()
        self.workers = workers
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **env,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "BENCH_UPSTREAM": upstream,
        }
        args = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "bench.minimal_proxy:app"]
        self.process = Process(args, env, log)
        try:
            _wait_answering(f"{self.base}/healthz", self.process, workers)
        except BenchError:
            self.stop()
            raise

    def worker_pids(self) -> list[int]:
        return self.process.children()

    def stop(self) -> None:
        self.process.stop()


class Nginx:
    """nginx as a reverse proxy with keep-alive connections to one model."""

    def __init__(self, folder: Path, workers: int, upstream: str):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise BenchError("nginx is missing (apt-get install -y nginx-light; scripts/bench.sh does it)")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, folder=folder, upstream=upstream, port=self.port))
        args = [nginx, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf)]
        self.process = Process(args, {}, folder / "nginx.log")
        try:
            _wait_answering(f"{self.base}/health", self.process)
        except BenchError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.stop()
