"""Where the web workers' time goes on the warm path: py-spy on the service's and the minimal proxy's.

With `--profile`, after the warm-path passes, each of the two gets one more run at c=32 while
py-spy samples every one of its web workers (--gil: the thread running Python code, so time
spent waiting, for the model or for a CPU, is not counted; --nonblocking). The collapsed
stacks are kept in test-artifacts/bench/profile-<way>.txt (input for any flame graph tool);
the report gets each package's share of the samples (where a sample's innermost frame is)
and the service's functions that are on the stack for the most samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .config import BenchError
from .processes import BIN

RATE = 200  # samples per second and worker
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
TOP = 15


def py_spy() -> str:
    found = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(found).exists():
        raise BenchError("--profile needs py-spy (pip install py-spy; scripts/bench.sh --profile does it)")
    return found


def record(pids: list[int], seconds: int, out: Path) -> list[subprocess.Popen]:
    """Start sampling each pid for `seconds`; each writes out-<pid>.txt (collapsed stacks)."""
    spy = py_spy()
    return [
        subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(seconds), "-r", str(RATE), "-f", "raw", "--gil", "--nonblocking"]
            + ["-o", str(out.with_name(f"{out.stem}-{pid}.txt"))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def collect(spies: list[subprocess.Popen], pids: list[int], out: Path) -> Counter:
    """Wait for the samplers; merge their stacks into `out`; the stacks with their counts."""
    for spy in spies:
        spy.wait(timeout=120)
    stacks: Counter = Counter()
    for pid in pids:
        part = out.with_name(f"{out.stem}-{pid}.txt")
        if part.exists():
            for line in part.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    stacks[stack] += int(count)
            part.unlink()
    out.write_text("".join(f"{stack} {count}\n" for stack, count in stacks.most_common()))
    return stacks


def package(file: str) -> str:
    """The package of a frame's file, as py-spy names it (relative to sys.path): flask, inference_app.api, stdlib json."""
    parts = file.replace("\\", "/").split("/")
    top = parts[0].removesuffix(".py")
    if top == "inference_app" and len(parts) > 1:
        return f"inference_app.{parts[1].removesuffix('.py')}"
    if top in sys.stdlib_module_names:
        return f"stdlib {top}"
    return top


def _module(file: str) -> str:
    return file.removesuffix(".py").replace("/", ".")


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        found = FRAME.match(frame.strip())
        out.append((found["function"], found["file"]) if found else (frame, ""))
    return out


def by_package(stacks: Counter) -> dict[str, float]:
    """Each package's share of the samples, by the innermost frame (self time)."""
    total = sum(stacks.values()) or 1
    shares: Counter = Counter()
    for stack, count in stacks.items():
        _function, file = _frames(stack)[-1]
        shares[package(file)] += count
    return {name: count / total for name, count in shares.most_common()}


def inclusive(stacks: Counter, within: str = "inference_app") -> list[tuple[str, float]]:
    """Functions of `within` by the share of samples they are on the stack for."""
    total = sum(stacks.values()) or 1
    seen: Counter = Counter()
    for stack, count in stacks.items():
        names = {f"{_module(file)}.{function}" for function, file in _frames(stack) if file.startswith(within)}
        for name in names:
            seen[name] += count
    return [(name, count / total) for name, count in seen.most_common(TOP)]


def section(
    profiles: dict[str, Counter],
    titles: dict[str, str],
    seconds: int,
    files: dict[str, Path],
    requests: dict[str, int],
) -> str:
    """Markdown: each package's Python time per request side by side, then the service's heaviest functions."""
    ways = list(profiles)
    per_request = {
        way: {name: share * sum(profiles[way].values()) / RATE / max(1, requests[way]) for name, share in shares}
        for way in ways
        for shares in [by_package(profiles[way]).items()]
    }
    names = sorted(
        {n for s in per_request.values() for n in s}, key=lambda n: -max(s.get(n, 0) for s in per_request.values())
    )
    lines = [
        f"py-spy ({RATE} samples/s per web worker, the thread holding the GIL: Python running, not "
        f"waiting) during one more {seconds} s run at c=32 for each; collapsed stacks in "
        + ", ".join(f"`{files[w].name}`" for w in ways)
        + " under test-artifacts/bench/. Python time per request, by the package of the innermost "
        "frame (where the time is spent):",
        "",
        "| Package | " + " | ".join(titles[w] for w in ways) + " |",
        "|---|" + "---|" * len(ways),
    ]
    for name in names[:TOP]:
        lines.append(f"| {name} | " + " | ".join(_us(per_request[w].get(name, 0)) for w in ways) + " |")
    lines += [
        "| *all* | " + " | ".join(_us(sum(per_request[w].values())) for w in ways) + " |",
        "| *samples, requests* | " + " | ".join(f"{sum(profiles[w].values()):,}, {requests[w]:,}" for w in ways) + " |",
    ]
    if "service" in profiles:
        lines += [
            "",
            "The service's own functions by the share of its samples they are on the stack for:",
            "",
            "| Function | Share |",
            "|---|---|",
            *[f"| `{name}` | {share:.1%} |" for name, share in inclusive(profiles["service"])],
        ]
    return "\n".join(lines)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"
