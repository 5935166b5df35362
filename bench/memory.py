"""Resident memory of the service's processes after the load, from /proc."""

from __future__ import annotations

from .processes import rss_mb
from .report import Row

TARGET_MB = 120


def rows(groups: dict[str, list[float]]) -> list[Row]:
    """One row per kind of process: every process's RSS listed, the largest judged."""
    out = []
    for label, sizes in groups.items():
        if not sizes:
            continue
        out.append(
            Row(
                "Memory (RSS after the run)",
                label,
                f"{max(sizes):.0f} MB (largest)",
                " ".join(f"{x:.0f}" for x in sizes) + " MB",
                "",
                f"≤ {TARGET_MB} MB each",
                max(sizes) <= TARGET_MB,
            )
        )
    return out


def sizes(pids: list[int]) -> list[float]:
    return [rss_mb(pid) for pid in pids]
