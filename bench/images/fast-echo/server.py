"""A fast echo model for the benchmarks: stdlib HTTP/1.1 with keep-alive, no per-request fork.

GET  /health   200 {"status": "ok"}
POST /predict  200, the request body echoed back with its Content-Type
"""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTH = b'{"status": "ok"}'
MAX_BODY = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    disable_nagle_algorithm = True  # small answers leave at once, not after a delayed ACK

    def do_GET(self):
        if self.path.split("?", 1)[0] in ("/health", "/v2/health/ready", "/ping"):
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
