"""Management commands: the background worker role, migrations at start-up, the example model, one reconciliation."""

from __future__ import annotations

import signal

import click
from flask import Flask, current_app
from flask.cli import AppGroup

EXAMPLE = {
    "user_id": "demo",
    "model_name": "iris",
    "version": "1",
    "image": "inference-examples/iris:1",
    "metadata": {
        "description": "scikit-learn logistic regression on the iris data set",
        "example_request": {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5]]},
    },
}


def register_commands(app: Flask) -> None:
    @app.cli.command("worker")
    def worker() -> None:
        """Run the background role: idle shutdown and reconciliation (one active per database)."""
        runner = current_app.extensions["background"]
        runner.role = "worker"

        def stop(signum, _frame):
            runner.shutdown()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        runner.run_forever()

    @app.cli.command("migrate-once")
    @click.option("--wait", "wait_seconds", default=60.0, show_default=True, help="Seconds to wait for the database.")
    def migrate_once(wait_seconds: float) -> None:
        """Wait for the database, then migrate to the newest schema, one process at a time."""
        from flask_migrate import upgrade

        from .extensions import db
        from .schema import DatabaseUnreachable, upgrade_once, wait_for_database

        engine = db.engine
        try:
            wait_for_database(engine, wait_seconds, lambda why: click.echo(f"waiting for the database: {why}"))
        except DatabaseUnreachable as exc:
            raise click.ClickException(str(exc)) from None
        outcome = upgrade_once(engine, upgrade)
        if outcome.applied:
            click.echo(f"migrated the database from {outcome.before or 'empty'} to {outcome.after}")
        else:
            waited = " (after waiting for another process's migration)" if outcome.waited_for_lock else ""
            click.echo(f"database already at {outcome.after}{waited}")

    @app.cli.command("seed-example")
    def seed_example() -> None:
        """Register the example iris model (idempotent)."""
        from .services.context import context
        from .services.registry import register_model

        model, created = register_model(EXAMPLE, context().settings)
        click.echo(f"example model {'registered' if created else 'already registered'}: id {model.id} ({model.image})")

    tokens = AppGroup("tokens", help="Create, list and revoke API tokens.")
    app.cli.add_command(tokens)

    @tokens.command("create")
    @click.option("--user", "user_id", help="the user_id whose models the token may use")
    @click.option("--admin", is_flag=True, help="an admin token: every model, the ingestion log")
    @click.option("--name", default="", help="a note saying what the token is for")
    def create_token(user_id: str | None, admin: bool, name: str) -> None:
        """Create a token and print it (it is shown only this once)."""
        from .services.auth import create_token

        if bool(user_id) == admin:
            raise click.UsageError("give exactly one of --user USER_ID or --admin")
        token, plain = create_token(name or (f"user {user_id}" if user_id else "admin"), user_id, admin)
        click.echo(f"token {token.id} for {'admin' if admin else 'user ' + user_id}: {plain}")
        click.echo("store it now: only its hash is kept", err=True)

    @tokens.command("list")
    def list_tokens() -> None:
        """List tokens (ids, owners, prefixes; never the tokens)."""
        from .extensions import db
        from .models import ApiToken

        for token in db.session.query(ApiToken).order_by(ApiToken.id):
            owner = "admin" if token.is_admin else f"user {token.user_id}"
            state = f"revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else "active"
            click.echo(f"{token.id}\t{token.prefix}...\t{owner}\t{state}\t{token.name}")

    @tokens.command("revoke")
    @click.argument("token_id", type=int)
    def revoke(token_id: int) -> None:
        """Revoke a token by id (effective within seconds in every process)."""
        from .services.auth import revoke_token

        if revoke_token(token_id) is None:
            raise click.ClickException(f"no token with id {token_id}")
        click.echo(f"token {token_id} revoked")

    @tokens.command("ensure-admin")
    def ensure_admin() -> None:
        """On first start with no token: create an admin token and print it once."""
        from .services.auth import ensure_admin_token

        plain = ensure_admin_token()
        if plain:
            click.echo(f"first start: admin token (shown once, keep it): {plain}")

    @app.cli.command("reconcile")
    def reconcile_once() -> None:
        """Make the registry and the Docker engine agree, once."""
        from .jobs.reconcile import reconcile

        report = reconcile()
        click.echo(
            f"adopted {report.adopted}, vanished {report.vanished}, removed {report.removed}, "
            f"ports updated {report.ports_updated}"
        )
