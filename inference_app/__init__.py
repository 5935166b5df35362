"""The inference service: on-demand model containers behind a JSON API and an HTMX dashboard."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import event

from .config import ConfigError, Settings
from .extensions import csrf, db, migrate

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class InferenceApp(Flask):
    """Flask, with whether a handler is async worked out once per handler, not on every call.

    Flask asks it of the view and of every hook on every request (inspect, a few µs each).
    Handlers are registered functions, so the cache stays small; it is bounded all the same.
    """

    SYNC_CACHE_SIZE = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_handlers: dict[Any, Any] = {}

    def ensure_sync(self, func):
        try:
            return self._sync_handlers[func]
        except (KeyError, TypeError):  # TypeError: an unhashable callable
            pass
        made = super().ensure_sync(func)
        try:
            if len(self._sync_handlers) < self.SYNC_CACHE_SIZE:
                self._sync_handlers[func] = made
        except TypeError:
            pass
        return made


def create_app(config_overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: config -> extensions -> subsystems -> blueprints -> error handlers."""
    app = InferenceApp(
        __name__,
        instance_path=os.environ.get("INSTANCE_PATH") or os.path.join(PROJECT_ROOT, "instance"),
        template_folder=os.path.join(PROJECT_ROOT, "templates"),
        static_folder=os.path.join(PROJECT_ROOT, "static"),
    )
    settings, flask_config = _settings(app, config_overrides or {})
    _configure(app, settings, flask_config)
    app.json.sort_keys = False

    from .logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    if settings.auth_disabled:
        logging.getLogger(__name__).warning("AUTH_DISABLED=true: every caller is treated as an admin")
    if not settings.allowed_image_prefixes:
        logging.getLogger(__name__).info("IMAGE_ALLOWLIST is empty: any image on the Docker host may be registered")

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(PROJECT_ROOT, "migrations"))
    csrf.init_app(app)
    if settings.is_sqlite:
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)

    from .jobs import background
    from .services import context, rate_limit

    context.init_app(app, settings)
    rate_limit.init_app(app, settings.max_concurrent_inferences_per_token)
    background.init_app(app, role="web" if settings.background_in_web else "worker")

    from .api import bp as api_bp
    from .api.health import bp as health_bp
    from .dashboard import bp as dashboard_bp

    csrf.exempt(api_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(dashboard_bp)

    from . import cookie_session, request_log, security_headers
    from .api.errors import register_error_handlers
    from .cli import register_commands

    cookie_session.init_app(app)
    request_log.init_app(app)
    security_headers.init_app(app)
    register_error_handlers(app)
    register_commands(app)
    return app


def _settings(app: Flask, overrides: Mapping[str, Any]) -> tuple[Settings, dict[str, Any]]:
    """Settings from the environment; overrides may name settings or raw Flask keys (TESTING...)."""
    setting_names = set(Settings.__dataclass_fields__)
    setting_overrides = {k.lower(): v for k, v in overrides.items() if k.lower() in setting_names}
    flask_config = {k: v for k, v in overrides.items() if k.lower() not in setting_names}
    bad = [k for k in flask_config if not k.isupper()]
    if bad:
        raise ConfigError(f"unknown settings: {', '.join(sorted(bad))}")
    settings = Settings.from_env(instance_path=app.instance_path)
    if setting_overrides:
        settings = settings.with_overrides(setting_overrides)
    return settings, flask_config


def _configure(app: Flask, settings: Settings, flask_config: dict[str, Any]) -> None:
    if settings.is_sqlite:
        os.makedirs(app.instance_path, exist_ok=True)
        engine_options = {"connect_args": {"timeout": 30, "check_same_thread": False}}
    else:
        engine_options = {"pool_size": 10, "max_overflow": 40, "pool_pre_ping": True, "pool_recycle": 1800}
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SECRET_KEY=settings.secret_key or instance_secret(app.instance_path),
        WTF_CSRF_TIME_LIMIT=None,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.session_lifetime_seconds),
    )
    app.config.update(flask_config)


def instance_secret(instance_path: str) -> str:
    """A random secret kept in the instance folder, shared by every worker on this host.

    Workers start together: the key is written to a file of this process's own and then hard-linked
    into place, which either makes the whole file appear at once or fails because another worker's
    is there already; the loser reads the winner's.
    """
    path = os.path.join(instance_path, "secret_key")
    os.makedirs(instance_path, exist_ok=True)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    draft = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            return _read_secret(path)
        return key
    finally:
        os.unlink(draft)


def _read_secret(path: str) -> str:
    with open(path) as handle:
        key = handle.read().strip()
    if not key:
        raise ConfigError(f"{path} is empty: delete it (a new key is made) or set SECRET_KEY")
    return key


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
