"""Template filters: times, durations, sizes and JSON in words a person reads at a glance."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..models import utcnow
from . import bp


def duration(seconds: float | None) -> str:
    """'850 ms', '4.2 s', '3 min 5 s', '2 h 10 min', '3 d 4 h'."""
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@bp.app_template_filter("ago")
def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = ((now or utcnow()) - value).total_seconds()
    if seconds < 2:
        return "just now"
    return f"{duration(seconds if seconds < 10 else int(seconds))} ago"


@bp.app_template_filter("until")
def until(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    seconds = (value - (now or utcnow())).total_seconds()
    return f"in {duration(int(seconds))}" if seconds >= 1 else "due now"


@bp.app_template_filter("since")
def since(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, as a plain duration (uptime, time in a state)."""
    if value is None:
        return "—"
    return duration(((now or utcnow()) - value).total_seconds())


@bp.app_template_filter("iso")
def iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else ""


@bp.app_template_filter("size")
def size(value: int | None) -> str:
    if not value:
        return "—"
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= factor:
            amount = value / factor
            return f"{amount:.0f} {unit}" if amount == int(amount) else f"{amount:.1f} {unit}"
    return f"{value} B"


@bp.app_template_filter("thousands")
def thousands(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


@bp.app_template_filter("pretty_json")
def pretty_json(value: Any, width: int = 76, _depth: int = 0) -> str:
    """Readable JSON: the outer object opened up, short parts on one line, long lists of numbers wrapped.

    Plain text: the template escapes it like any other string.
    """
    flat = json.dumps(value, ensure_ascii=False, default=str)
    indent = "  " * _depth
    inner = indent + "  "
    fits = len(flat) + len(inner) <= width and (_depth or isinstance(value, list))
    if not isinstance(value, (dict, list)) or not value or fits:
        return flat
    if isinstance(value, dict):
        items = [
            f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {pretty_json(v, width, _depth + 1)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if all(not isinstance(v, (dict, list)) for v in value):
        lines, line = [], inner
        for item in (json.dumps(v, ensure_ascii=False, default=str) for v in value):
            if line.strip() and len(line) + len(item) + 2 > width:
                lines.append(line.rstrip())
                line = inner
            line += item + ", "
        lines.append(line.rstrip().rstrip(","))
        return "[\n" + "\n".join(lines) + "\n" + indent + "]"
    return "[\n" + ",\n".join(inner + pretty_json(v, width, _depth + 1) for v in value) + "\n" + indent + "]"


bp.add_app_template_filter(duration, "duration")
