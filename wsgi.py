"""The WSGI entry point for gunicorn and the flask CLI."""

from inference_app import create_app

app = create_app()
