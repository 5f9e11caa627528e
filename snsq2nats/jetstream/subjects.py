"""NATS subject matching, the one implementation: `*` is one token, a trailing `>` the rest."""

from __future__ import annotations

import functools
from collections.abc import Iterable


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a concrete subject matches one pattern."""
    return _subject_in(subject, (pattern,))


def subject_in(subject: str, patterns: Iterable[str]) -> bool:
    """Whether a concrete subject matches any of the patterns."""
    return _subject_in(subject, tuple(patterns))


@functools.lru_cache(maxsize=8192)
def _subject_in(subject: str, patterns: tuple[str, ...]) -> bool:
    # Cached: a route sees the same few subjects (one per FIFO group at most) over and over.
    tokens = subject.split(".")
    for pattern in patterns:
        parts = pattern.split(".")
        for i, part in enumerate(parts):
            if part == ">":
                if len(tokens) > i:
                    return True
                break
            if i >= len(tokens) or (part != "*" and part != tokens[i]):
                break
        else:
            if len(parts) == len(tokens):
                return True
    return False
