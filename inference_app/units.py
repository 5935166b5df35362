"""Units of the settings and registrations: memory sizes like '512m' to bytes and back."""

from __future__ import annotations

import re

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY_BYTES = 6 * 1024 * 1024  # Docker refuses less than 6 MiB


def parse_memory(name: str, raw: str | int) -> int:
    """Bytes from '512m', '1g', '1048576' or an integer; ValueError names the field."""
    if isinstance(raw, bool):
        raise ValueError(f"{name} must be a size like '512m' or a number of bytes")
    if isinstance(raw, int):
        value = raw
    else:
        match = _MEMORY.match(str(raw))
        if not match:
            raise ValueError(f"{name} must be a size like '512m', '2g' or a number of bytes, got {raw!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < MIN_MEMORY_BYTES:
        raise ValueError(f"{name} must be at least 6m, got {raw!r}")
    return value


def format_memory(value: int) -> str:
    """The shortest exact form of a byte count: '512m', '1g', or the bytes."""
    for unit, size in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)
