"""Resident memory of the service's processes after the load, from /proc.

The baseline of each kind of process is its resident size once started, before any load.
"""

from __future__ import annotations

from .processes import rss_mb
from .report import Row

TARGET_MB = 120


class MemoryLog:
    """RSS per kind of process: once started (the baseline) and after the load."""

    def __init__(self) -> None:
        self._after: dict[str, list[float]] = {}
        self._start: dict[str, list[float]] = {}

    def started(self, label: str, pids: list[int]) -> None:
        """The first measurement of a kind is its baseline."""
        self._start.setdefault(label, sizes(pids))

    def after(self, label: str, pids: list[int] | None = None, mb: list[float] | None = None) -> None:
        self._after[label] = sizes(pids) if pids is not None else list(mb or [])

    def rows(self, baselines: dict[str, str] | None = None) -> list[Row]:
        """One row per kind: every process's RSS listed, the largest judged."""
        out = []
        for label, after in self._after.items():
            if not after:
                continue
            start_label = (baselines or {}).get(label, label)
            start = self._start.get(start_label)
            baseline = f"once started: {_mb(start)}" if start else ""
            out.append(
                Row(
                    "Memory (RSS after the run)",
                    label,
                    f"{max(after):.0f} MB (largest)",
                    _mb(after),
                    baseline,
                    f"≤ {TARGET_MB} MB each",
                    max(after) <= TARGET_MB,
                )
            )
        return out


def sizes(pids: list[int]) -> list[float]:
    return [rss_mb(pid) for pid in pids]


def _mb(values: list[float]) -> str:
    return " ".join(f"{x:.0f}" for x in values) + " MB"
