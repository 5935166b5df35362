"""Management commands: the background worker role, the example model, one reconciliation."""

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
