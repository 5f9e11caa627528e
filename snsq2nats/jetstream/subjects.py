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


def partition_of(token: str, partitions: int) -> int:
    """The partition nats-server's `{{partition(N, …)}}` mapping puts a token in.

    The server hashes the token's bytes with 32-bit FNV-1a and takes it modulo N; computing the
    same here lets `subject`, `verify` and the bridge name a group's partition without asking
    the server.
    """
    if partitions <= 1:
        return 0
    value = 0x811C9DC5
    for byte in token.encode("utf-8"):
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value % partitions
