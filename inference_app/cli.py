"""Management commands: the background worker role, migrations at start-up, the example model, one reconciliation."""

from __future__ import annotations

import signal

import click
from flask import Flask, current_app

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

    @app.cli.command("reconcile")
    def reconcile_once() -> None:
        """Make the registry and the Docker engine agree, once."""
        from .jobs.reconcile import reconcile

        report = reconcile()
        click.echo(
            f"adopted {report.adopted}, vanished {report.vanished}, removed {report.removed}, "
            f"ports updated {report.ports_updated}"
        )
