"""The floor of our stack: the least a Flask + urllib3 proxy to one model does, nothing else.

Run like the service, under its gunicorn.conf.py (same workers, threads and worker class):
BENCH_UPSTREAM=http://127.0.0.1:PORT gunicorn -c gunicorn.conf.py bench.minimal_proxy:app
"""

import os

import urllib3
from flask import Flask, Response, request

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8080")
app = Flask(__name__)
http = urllib3.PoolManager(maxsize=64, block=False, retries=False)


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/<path:path>")
def forward(path: str):
    answer = http.request(
        "POST",
        f"{UPSTREAM}/{path}",
        body=request.get_data(),
        headers={"Content-Type": request.content_type or "application/octet-stream"},
        timeout=urllib3.Timeout(connect=2.0, read=120.0),
    )
    return Response(answer.data, answer.status, content_type=answer.headers.get("Content-Type"))
