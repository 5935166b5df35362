"""Dashboard pages (see templates/)."""

from __future__ import annotations

from flask import render_template

from . import bp


@bp.get("/")
def index():
    return render_template("index.html")
