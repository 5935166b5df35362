"""Registry scale: list, search and dashboard latency with 100,000 models registered.

The models are bulk-loaded with COPY (not through the API), then vacuumed as autovacuum
would soon do. Requests go one at a time over a
keep-alive connection; each round measures every page in turn, /healthz being the baseline
(the cost of any request through gunicorn and Flask), and the p95s of the rounds are compared.
"""

from __future__ import annotations

import http.client
import io
import logging
import time
from datetime import UTC, datetime

from . import database
from .processes import Web
from .report import Row, ms
from .session import Session
from .stats import median, ms_spread, percentile

logger = logging.getLogger(__name__)

MODELS = 100_000
REQUESTS = 60  # per page and round
WORDS = (
    "sentiment resnet bert whisper llama yolo iris mnist churn fraud ranker embedder translator "
    "summarizer tagger detector segmenter forecaster recommender classifier regressor tokenizer "
    "vision speech ocr ner qa chat reranker anomaly pricing demand credit spam toxicity topic "
    "intent keyword caption upscaler denoiser"
).split()
SEARCH = "sentiment"
PAGES = {
    "list": "/api/models",
    "search": f"/api/models?q={SEARCH}",
    "dashboard": "/",
    "healthz": "/healthz",
}
TARGETS = {"list": 0.025, "search": 0.025, "dashboard": 0.100}
COLUMNS = (
    "user_id, model_name, version, image, port, health_path, predict_path, env, metadata, "
    "created_at, updated_at, status, status_changed_at, keep_warm"
)


def bulk_register(url: str, count: int) -> float:
    """COPY `count` models into the registry; seconds taken."""
    began = time.monotonic()
    now = datetime.now(UTC).isoformat()
    lines = io.StringIO()
    for i in range(count):
        name = f"{WORDS[i % len(WORDS)]}-{i}"
        meta = '{"source": "bench"}'
        lines.write(
            f"user-{i % 1000}\t{name}\t1\tregistry.example/{name}:1\t8080\t/health\t/predict\t{{}}\t{meta}\t"
            f"{now}\t{now}\tstopped\t{now}\tf\n"
        )
    lines.seek(0)
    with database.cursor(url) as cur:
        cur.copy_expert(f"COPY models ({COLUMNS}) FROM STDIN", lines)
        settle(cur)
    return time.monotonic() - began


def settle(cur) -> None:
    """What autovacuum soon does to a table this size: statistics and the visibility map.

    VACUUM cannot mark pages all-visible while an older transaction is open anywhere in
    the database, so it is repeated (a few times at most) until it could.
    """
    for _ in range(10):
        cur.execute("VACUUM (ANALYZE) models")
        cur.execute("SELECT relallvisible >= 0.9 * relpages FROM pg_class WHERE relname = 'models'")
        if cur.fetchone()[0]:
            return
        time.sleep(0.5)
    logger.warning("models is not all-visible after VACUUM: index-only scans will not be used")


def _latencies(conn: http.client.HTTPConnection, path: str, count: int, headers: dict[str, str]) -> list[float]:
    out = []
    for _ in range(count):
        began = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        out.append(time.perf_counter() - began)
        if response.status != 200 or not body:
            raise RuntimeError(f"GET {path}: {response.status}")
    return out


def dashboard_is_placeholder(s: Session, web: Web) -> bool:
    """True when / shows none of the registered models (the dashboard is not built yet)."""
    newest = s.call(web, "GET", "/api/models?per_page=1")["items"][0]["model_name"]
    return newest not in s.http.get(f"{web.base}/", headers={"Cookie": s.sign_in(web)}, timeout=30).text


def run(s: Session, web: Web) -> list[Row]:
    took = bulk_register(s.cfg.database_url, MODELS)
    logger.info("registered %s models with COPY in %.1f s", MODELS, took)
    matches = s.call(web, "GET", PAGES["search"])["total"]
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    # the API with the admin token, the dashboard with a signed-in session, as their users call them
    headers = {
        "list": {"Authorization": s.http.headers["Authorization"]},
        "search": {"Authorization": s.http.headers["Authorization"]},
        "dashboard": {"Cookie": s.sign_in(web)},
        "healthz": {},
    }
    for name, path in PAGES.items():  # warm-up
        _latencies(conn, path, 5, headers[name])
    p95: dict[str, list[float]] = {name: [] for name in PAGES}
    for _ in range(s.cfg.reps):
        for name, path in PAGES.items():
            p95[name].append(percentile(_latencies(conn, path, REQUESTS, headers[name]), 95))
    conn.close()
    placeholder = dashboard_is_placeholder(s, web)
    if placeholder:
        s.notes.append(
            "`GET /` was still a placeholder page (it renders no models): its figure is not the dashboard's."
        )
    base = median(p95["healthz"])
    labels = {
        "list": "`GET /api/models` first page, p95",
        "search": f"`GET /api/models?q={SEARCH}` (prefix, {matches:,} matches), p95",
        "dashboard": "`GET /` first page, p95" + (" (placeholder page)" if placeholder else ""),
    }
    name = f"Registry scale ({MODELS:,} models)"
    rows = []
    for key, label in labels.items():
        value = median(p95[key])
        rows.append(
            Row(
                name,
                label,
                ms(value),
                ms_spread(p95[key]),
                f"/healthz p95 {ms(base)} (+{(value - base) * 1e3:.1f} ms)",
                f"≤ {TARGETS[key] * 1e3:.0f} ms",
                value <= TARGETS[key],
            )
        )
    return rows
