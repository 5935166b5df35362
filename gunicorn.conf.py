"""gunicorn settings for an I/O-bound proxy: threads, and timeouts longer than any cold start."""

import logging
import os
import shutil
import tempfile

from inference_app.config import ConfigError, Settings

try:
    _settings = Settings.from_env()
except ConfigError as exc:  # same message the app would give, before any worker boots
    raise SystemExit(f"configuration error: {exc}") from None

bind = f"{os.environ.get('BIND_HOST', '127.0.0.1')}:{_settings.port}"
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
if _settings.is_sqlite and workers != 1:
    logging.getLogger("gunicorn.error").warning(
        "SQLite database: running 1 web worker instead of %s (set DATABASE_URL to PostgreSQL for more)", workers
    )
    workers = 1
preload_app = False  # no threads or connections may cross a fork
timeout = int(_settings.start_timeout_seconds + _settings.queue_timeout_seconds + _settings.infer_timeout_seconds + 30)
graceful_timeout = 30
keepalive = 75
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None


# Per-worker metric samples, added up by /metrics (prometheus_client's multiprocess mode).
# prometheus_client reads the variable when it is first imported: set it before the import.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="inference-metrics-")

# Imported now, never inside a hook: the master runs child_exit in its SIGCHLD handler, which the
# next worker's exit can interrupt; an import interrupted that way leaves a half-made module,
# and the second call fails on it (ImportError, exit code 1 on SIGTERM).
from prometheus_client import multiprocess  # noqa: E402


def on_starting(server):
    """Samples of a previous run would be counted again: start from an empty folder."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def child_exit(server, worker):
    """Runs in the master's SIGCHLD handler: no imports, nothing that could be half done."""
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """In the single-process form (SQLite), the one web worker also runs the background jobs."""
    app = worker.wsgi
    runner = app.extensions.get("background") if hasattr(app, "extensions") else None
    if runner is not None and runner.role == "web":
        runner.start()
