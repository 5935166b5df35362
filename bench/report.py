"""The result table: one row per figure, Markdown for the terminal and docs/benchmarks.md."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    benchmark: str
    metric: str
    value: str  # the median of the repetitions
    spread: str = ""  # min..max of the repetitions
    baseline: str = ""  # what it was measured against, in the same run
    target: str = ""
    met: bool | None = None


HEADER = (
    "Benchmark",
    "Figure",
    "Median",
    "Reps min..max",
    "Baseline (same run)",
    "Target",
    "Met",
)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        cells = (r.benchmark, r.metric, r.value, r.spread, r.baseline, r.target, met)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1000:.{digits}f} ms"


def document(
    machine: list[tuple[str, str]],
    configuration: list[tuple[str, str]],
    rows: list[Row],
    sections: list[tuple[str, str]],
    notes: list[str],
    loads: list[tuple[str, str]],
    minutes: float,
) -> str:
    """docs/benchmarks.md: the machine, the service's configuration, the table, details, load, notes."""
    parts = [
        "# Benchmarks",
        "",
        "Written by `make bench` (the `bench/` package; `python -m bench --help`). Every figure is",
        "measured in one run against its baseline on the same machine; repetitions alternate",
        "between the service and its baseline, and the median of the repetitions is quoted",
        "(min..max beside it). All load goes to 127.0.0.1.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in machine],
        f"- Run took {minutes:.1f} min",
        "",
        "## The service's configuration",
        "",
        *[f"- {k}: {v}" for k, v in configuration],
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
    ]
    for title, text in sections:
        parts += [f"## {title}", "", text, ""]
    parts += [
        "## Load on the machine (1/5/15-minute load average at each stage's start)",
        "",
        *[f"- {stage}: {load}" for stage, load in loads],
        "",
    ]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)
