"""Iris model server: stdlib HTTP (no Flask) in front of a pickled scikit-learn model.

  GET  /health   200 {"status": "ok"} once the model is loaded, 503 before
  POST /predict  {"instances": [[sepal_len, sepal_wid, petal_len, petal_wid], ...]}
                 -> {"predictions": ["setosa", ...], "probabilities": [[...], ...],
                     "model": "iris-logreg"}
                 bad input -> 400 {"error": "..."}

Environment: PORT (default 8080), MODEL_DIR (default /model), MODEL_BACKEND:
  linear (default)  the LogisticRegression's coef_/intercept_ exported by
                    train.py to linear.json, evaluated (softmax) in pure
                    Python; train.py checked it equals predict_proba
  sklearn           unpickle model.pkl and call predict_proba (imports
                    scikit-learn + scipy: about 1.1 s more to become healthy)
The port is bound at once and the model loads in a background thread, so the
process answers /health (503) while scikit-learn is still importing.
One log line per request goes to stderr. HTTP/1.1 keep-alive, every response
has a Content-Length.
"""

import json
import math
import os
import pickle
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_DIR = os.environ.get("MODEL_DIR", "/model")
MODEL_BACKEND = os.environ.get("MODEL_BACKEND", "linear")
MAX_BODY = 1 << 20  # 1 MiB
MAX_INSTANCES = 10000

_state = {"bundle": None, "error": None}


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")


class LinearSoftmax:
    """predict_proba of a multinomial linear model, standard library only."""

    def __init__(self, coef, intercept):
        self.coef = [[float(w) for w in row] for row in coef]
        self.intercept = [float(b) for b in intercept]

    def predict_proba(self, rows):
        out = []
        for x in rows:
            z = [b + sum(w * v for w, v in zip(ws, x)) for ws, b in zip(self.coef, self.intercept)]
            top = max(z)
            e = [math.exp(v - top) for v in z]
            total = sum(e)
            out.append([v / total for v in e])
        return out


def load_model() -> None:
    started = time.monotonic()
    try:
        if MODEL_BACKEND == "sklearn":
            path = os.path.join(MODEL_DIR, "model.pkl")
            with open(path, "rb") as f:
                bundle = pickle.load(f)  # imports the sklearn modules the model needs
        elif MODEL_BACKEND == "linear":
            path = os.path.join(MODEL_DIR, "linear.json")
            with open(path) as f:
                bundle = json.load(f)
            bundle["model"] = LinearSoftmax(bundle["coef"], bundle["intercept"])
        else:
            raise ValueError(f"MODEL_BACKEND must be linear or sklearn, not {MODEL_BACKEND!r}")
        bundle["model"].predict_proba([[5.1, 3.5, 1.4, 0.2]])  # warm up once
    except Exception as exc:  # a model that cannot load is fatal: exit visibly
        log(f"fatal: cannot load model ({MODEL_BACKEND}) from {MODEL_DIR}: {exc!r}")
        os._exit(1)
    _state["bundle"] = bundle
    log(f"model {bundle['name']} ({MODEL_BACKEND}) loaded from {path} in {time.monotonic() - started:.2f}s")


class BadRequest(Exception):
    pass


def parse_instances(body: bytes, n_features: int) -> list:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "instances" not in doc:
        raise BadRequest('request body must be a JSON object with an "instances" list')
    rows = doc["instances"]
    if not isinstance(rows, list) or not rows:
        raise BadRequest('"instances" must be a non-empty list of rows')
    if len(rows) > MAX_INSTANCES:
        raise BadRequest(f'"instances" has {len(rows)} rows; at most {MAX_INSTANCES} per request')
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_features:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise BadRequest(f"instances[{i}] must be a list of {n_features} numbers, got {got}")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BadRequest(f"instances[{i}][{j}] must be a finite number, got {json.dumps(v)}")
    return rows


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response sets Content-Length
    server_version = "iris-server/1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def send_json(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        ms = (time.monotonic() - getattr(self, "_t0", time.monotonic())) * 1000
        rid = self.headers.get("X-Request-ID", "-") if self.headers else "-"
        log(f'{self.client_address[0]} "{self.requestline}" {code} {ms:.1f}ms rid={rid}')

    def log_message(self, fmt, *args):  # errors from http.server itself
        log(f"{self.client_address[0]} {fmt % args}")

    def handle_one_request(self):
        self._t0 = time.monotonic()
        super().handle_one_request()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if _state["bundle"] is None:
                self.send_json(503, {"status": "loading"})
            else:
                self.send_json(200, {"status": "ok"})
        elif path == "/predict":
            self.send_json(405, {"error": "use POST /predict"})
        else:
            self.send_json(404, {"error": f"no route for GET {path}"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        length = self.headers.get("Content-Length")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or length is None:
            self.close_connection = True
            return self.send_json(411, {"error": "a Content-Length header is required"})
        try:
            length = int(length)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return self.send_json(400, {"error": f"bad Content-Length {length!r}"})
        if length > MAX_BODY:
            self.close_connection = True
            return self.send_json(413, {"error": f"request body over {MAX_BODY} bytes"})
        body = self.rfile.read(length)  # always drain the body (keep-alive)
        if path != "/predict":
            return self.send_json(404, {"error": f"no route for POST {path}"})
        bundle = _state["bundle"]
        if bundle is None:
            return self.send_json(503, {"error": "model is still loading"})
        try:
            rows = parse_instances(body, bundle["n_features"])
        except BadRequest as exc:
            return self.send_json(400, {"error": str(exc)})
        proba = bundle["model"].predict_proba(rows)
        classes = bundle["classes"]
        self.send_json(
            200,
            {
                "predictions": [classes[max(range(len(p)), key=p.__getitem__)] for p in proba],
                "probabilities": [[round(float(x), 6) for x in p] for p in proba],
                "model": bundle["name"],
            },
        )


class Server(ThreadingHTTPServer):
    # the standard library listens with a backlog of 5: a burst of new connections (a cold-start
    # herd reaching the pod directly, with no proxy in front) would be dropped or reset
    request_queue_size = 128


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = Server(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum, frame):  # PID 1 in a container: SIGTERM must be handled
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on :{port}, loading the model ({MODEL_BACKEND}) from {MODEL_DIR}")
    threading.Thread(target=load_model, name="load-model", daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        log("stopped")


if __name__ == "__main__":
    main()
