"""A fast echo model for the benchmarks: stdlib HTTP/1.1 with keep-alive, no per-request fork.

GET  /health   200 {"status": "ok"} once ready; 503 before
POST /predict  200, the request body echoed back with its Content-Type

Environment (all optional; the defaults make the fastest model):
  READY_AFTER_MS     answer 503 on every path until this long after the process started
                     (a server that loads its weights before it serves)
  PREDICT_SLEEP_MS   sleep this long in each /predict (a model whose time does not depend on cores)
  ONE_AT_A_TIME      "1": serve one /predict at a time; the others wait their turn
"""

import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTH = b'{"status": "ok"}'
NOT_READY = b'{"status": "loading"}'
MAX_BODY = 1 << 20
READY_AT = time.monotonic() + int(os.environ.get("READY_AFTER_MS") or 0) / 1000
PREDICT_SLEEP = int(os.environ.get("PREDICT_SLEEP_MS") or 0) / 1000
TURN = threading.Lock() if os.environ.get("ONE_AT_A_TIME") == "1" else nullcontext()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    disable_nagle_algorithm = True  # small answers leave at once, not after a delayed ACK

    def do_GET(self):
        if time.monotonic() < READY_AT:
            self._answer(503, NOT_READY, "application/json")
        elif self.path.split("?", 1)[0] in ("/health", "/v2/health/ready", "/ping"):
            self._answer(200, HEALTH, "application/json")
        else:
            self._answer(404, b'{"error": "not found"}', "application/json")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._answer(413, b'{"error": "too large"}', "application/json")
            return
        body = self.rfile.read(length) if length else b""
        if time.monotonic() < READY_AT:
            self._answer(503, NOT_READY, "application/json")
            return
        if PREDICT_SLEEP:
            with TURN:
                time.sleep(PREDICT_SLEEP)
        self._answer(200, body, self.headers.get("Content-Type") or "application/octet-stream")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):  # one line per request would cost more than the echo
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores SIGTERM unless handled
    server = Server(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
