"""Durations as other tools spell them; the plan holds integer nanoseconds like the server."""

from __future__ import annotations

_UNITS = ((3_600_000_000_000, "h"), (60_000_000_000, "m"), (1_000_000_000, "s"))
_SUBSECOND = ((1_000_000, "ms"), (1_000, "us"), (1, "ns"))


def go_duration(ns: int) -> str:
    """A Go `time.ParseDuration` string. Go has no day unit, so 4 days is `96h`; the value is
    exact (never rounded): whole seconds become h/m/s parts, the rest ms, us or ns."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns % 1_000_000_000:
        for size, unit in _SUBSECOND:
            if ns % size == 0:
                return f"{sign}{ns // size}{unit}"
    parts = []
    for size, unit in _UNITS:
        if ns >= size:
            parts.append(f"{ns // size}{unit}")
            ns %= size
    return sign + "".join(parts)
