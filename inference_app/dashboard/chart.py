"""The geometry of the small inference chart (bars: requests a minute; line: average latency).

Pure functions of the history, so the template only draws numbers: nothing model-supplied
reaches the SVG.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..services.insights import InferenceHistory

WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 40, 52, 14, 24


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: float
    top: int
    bottom: float
    bars: list[Bar]
    latency: list[Point]
    max_requests: int
    max_latency_ms: int
    minutes: int

    @property
    def latency_path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.latency)


def _nice_ceiling(value: float) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least value."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def inference_chart(history: InferenceHistory, width: int = WIDTH, height: int = HEIGHT) -> Chart:
    minutes = history.minutes
    count = max(1, len(minutes))
    right, bottom = width - RIGHT, height - BOTTOM
    plot_w, plot_h = right - LEFT, bottom - TOP
    slot = plot_w / count
    top_requests = _nice_ceiling(max((m.requests for m in minutes), default=0))
    top_latency = _nice_ceiling(max((m.avg_ms or 0 for m in minutes), default=0))
    bars, latency = [], []
    for i, m in enumerate(minutes):
        x = LEFT + i * slot
        if m.requests:
            h = max(1.0, plot_h * m.requests / top_requests)
            words = f"{m.minute:%H:%M} UTC: {m.requests} request{'s' if m.requests != 1 else ''}"
            if m.errors:
                words += f", {m.errors} failed"
            if m.avg_ms is not None:
                words += f", average {m.avg_ms:.0f} ms, slowest {m.max_ms} ms"
            bars.append(Bar(round(x + slot * 0.15, 1), round(bottom - h, 1), round(slot * 0.7, 1), round(h, 1), words))
        if m.avg_ms is not None:
            latency.append(Point(x + slot / 2, bottom - plot_h * m.avg_ms / top_latency))
    return Chart(width, height, LEFT, right, TOP, bottom, bars, latency, top_requests, top_latency, len(minutes))
