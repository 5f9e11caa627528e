"""How values read in every report: durations, sizes, field values, ARNs, server URLs, routes.

Pure functions of their arguments, shared by the terminal, Markdown and HTML outputs so a value is
spelled the same way wherever a person reads it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from snsq2nats.aws.arns import parse_arn
from snsq2nats.jetstream.spec import NS
from snsq2nats.plan.model import Route

# Field names as the server spells them (spec.py); the leaf of a dotted path is what counts.
_DURATION_FIELDS = {"max_age", "duplicate_window", "ack_wait", "inactive_threshold", "backoff"}
_SIZE_FIELDS = {"max_bytes", "max_msg_size"}
# JetStream writes "no limit" as -1 for counts and sizes, and as 0 for max_age.
_COUNT_FIELDS = {"max_msgs", "max_deliver", "max_ack_pending", "max_msgs_per_subject"}
_ZERO_IS_UNLIMITED = {"max_age"}


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/@]*@")


def safe_url(url: str) -> str:
    """Drop user:password@ from a server URL: reports are shared, credentials must not be."""
    return _USERINFO.sub(r"\1", url.strip())


def format_duration(ns: int) -> str:
    """Nanoseconds as a person reads them: 30s, 4d, 1h30m, 250ms; exact, never rounded."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    rest = abs(ns)
    parts = []
    for unit, size in (
        ("d", 86_400 * NS),
        ("h", 3_600 * NS),
        ("m", 60 * NS),
        ("s", NS),
        ("ms", 1_000_000),
        ("µs", 1_000),
        ("ns", 1),
    ):
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return sign + "".join(parts)


def format_size(n: int) -> str:
    """Bytes in the largest binary unit that divides them exactly (1 MiB, 256 KiB, 1,000 B)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} B"


def format_value(field: str, value: Any) -> str:
    """One side of a field diff, in the units the field means (durations and sizes decoded)."""
    leaf = field.rsplit(".", 1)[-1]
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if leaf in _ZERO_IS_UNLIMITED and value == 0:
            return "unlimited"
        if leaf in _SIZE_FIELDS | _COUNT_FIELDS and value == -1:
            return "unlimited"
        if leaf in _DURATION_FIELDS:
            return format_duration(value)
        if leaf in _SIZE_FIELDS:
            return format_size(value)
        return str(value)
    if isinstance(value, list) and leaf in _DURATION_FIELDS:
        return "[" + ", ".join(format_value(field, v) for v in value) + "]"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, str):
        return value
    # Nested objects (sources, placement, metadata): sorted JSON is unambiguous and stable.
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def short_arn(arn: str) -> str:
    """`sqs:us-east-1:orders` for a 100-column terminal; the full ARN is in the files."""
    try:
        parts = parse_arn(arn)
    except ValueError:
        return arn
    return f"{parts.service}:{parts.region}:{parts.resource}"


def _nats_end(route: Route, *, with_consumer: bool) -> str:
    if with_consumer and route.stream and route.consumer:
        durables = route.durables
        if len(durables) > 1:
            return f"{route.stream}/{durables[0]}…{durables[-1]}"
        return f"{route.stream}/{route.consumer}"
    if route.subject and route.stream:
        return f"{route.subject} ({route.stream})"
    return route.subject or route.stream or "?"


def route_ends(route: Route, arn: Callable[[str], str] = str) -> tuple[str, str]:
    """Where a bridge route reads and where it writes, in the direction traffic flows."""
    if route.kind in ("sqs-to-nats", "sns-to-nats"):
        return arn(route.aws_arn), _nats_end(route, with_consumer=False)
    if route.kind in ("nats-to-sqs", "nats-to-sns"):
        return _nats_end(route, with_consumer=True), arn(route.aws_arn)
    source = _nats_end(route, with_consumer=True) if route.consumer else (route.stream or "?")
    if route.target_stream:
        target = (
            f"{route.subject} ({route.target_stream})" if route.subject else route.target_stream
        )
    else:
        target = route.subject or "?"
    return source, target
