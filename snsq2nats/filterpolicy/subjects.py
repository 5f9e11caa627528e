"""Subject tokens, the subject of a message, and compiling policies into filter subjects."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from snsq2nats.filterpolicy.model import JsonLiteral, KeyRule, MessageAttribute, attribute_values
from snsq2nats.filterpolicy.policy import MAX_COMBINATIONS, FilterPolicy

ABSENT_TOKEN: Final = "~absent"
EMPTY_TOKEN: Final = "~empty"
TYPED_TOKEN: Final = "~typed"

# --------------------------------------------------------------------------------------------
# Subject tokens
# --------------------------------------------------------------------------------------------

_PLAIN: Final = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED: Final = re.compile(r"(?:[A-Za-z0-9_-]|~[0-9A-F]{2})+")


def encode_token(value: str | None) -> str:
    """One NATS subject token for an attribute value (None = absent). See the module docs."""
    if value is None:
        return ABSENT_TOKEN
    if not value:
        return EMPTY_TOKEN
    if _PLAIN.fullmatch(value):
        return value
    out: list[str] = []
    for ch in value:
        if ch in _PLAIN_CHARS:
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def decode_token(token: str) -> str | None:
    """The value `encode_token` turned into `token`; ValueError for anything it cannot produce."""
    if token == ABSENT_TOKEN:
        return None
    if token == EMPTY_TOKEN:
        return ""
    if not _ESCAPED.fullmatch(token):
        raise ValueError(f"{token!r} is not a token encode_token produces")
    if "~" not in token:
        return token
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "~":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(token[i]))
            i += 1
    try:
        value = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise ValueError(f"{token!r} does not hold UTF-8") from None
    if encode_token(value) != token:  # e.g. "~41" for "A": not canonical
        raise ValueError(f"{token!r} is not the canonical token of {value!r}")
    return value


def subject_for(
    attributes: Mapping[str, MessageAttribute] | None, promoted: Sequence[str], prefix: str
) -> str:
    """The concrete subject for a message: `prefix` then one token per promoted attribute."""
    attrs = attributes or {}
    tokens = [prefix]
    for name in promoted:
        attr = attrs.get(name)
        if attr is None:
            tokens.append(ABSENT_TOKEN)
            continue
        base = "String.Array" if attr.data_type == "String.Array" else attr.data_type.split(".")[0]
        if base == "String":
            tokens.append(encode_token(attr.text()))
        elif base == "Binary" or attribute_values(attr) is None:
            tokens.append(ABSENT_TOKEN)  # evaluation ignores it, so the subject must too
        else:
            tokens.append(TYPED_TOKEN)
    return ".".join(tokens)


# --------------------------------------------------------------------------------------------
# Compiling to subjects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileResult:
    """Either `subjects` (exact, non-overlapping JetStream filter subjects) or a `reason`."""

    subjects: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def exact(self) -> bool:
        return self.reason is None


def _entry_reason(rule: KeyRule) -> str | None:
    """Why this key's entries cannot become subject tokens, or None when they can."""
    key = rule.name
    checks: list[tuple[Any, str]] = [
        (rule.exists_true, "exists:true (a '*' token would also match the absent marker)"),
        (rule.numeric, "a numeric comparison"),
        (rule.prefixes, "prefix matching"),
        (rule.suffixes, "suffix matching"),
        (rule.ignore_case, "equals-ignore-case"),
        (rule.cidrs, "cidr matching"),
        (rule.anything_but or rule.anything_but_prefix, "anything-but"),
    ]
    for present, what in checks:
        if present:
            return f"key {key!r} uses {what}"
    if any(type(v) is int for v in rule.exact):
        return (
            f"key {key!r} matches a number, which only Number or String.Array attributes carry "
            "(promoted attributes are String tokens)"
        )
    if any(type(v) is JsonLiteral for v in rule.exact):
        return (
            f"key {key!r} matches true/false/null, which only String.Array attributes carry "
            "(promoted attributes are String tokens)"
        )
    return None


def _policy_reason(policy: FilterPolicy) -> str | None:
    """Why the policy cannot compile whatever is promoted, or None."""
    if policy.scope != "MessageAttributes":
        return "the policy filters on the message body (FilterPolicyScope MessageBody)"
    for branch in policy.branches:
        for rule in branch:
            reason = _entry_reason(rule)
            if reason:
                return reason
    return None


def _covers(general: tuple[str, ...], specific: tuple[str, ...]) -> bool:
    return all(g == "*" or g == s for g, s in zip(general, specific, strict=True))


def _overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return all(x == "*" or y == "*" or x == y for x, y in zip(a, b, strict=True))


def compile_to_subjects(
    policy: FilterPolicy, promoted: Sequence[str], prefix: str
) -> CompileResult:
    """Exact JetStream filter subjects for `policy` under `subject_for`'s layout, or why not."""
    reason = _policy_reason(policy)
    if reason:
        return CompileResult(reason=reason)
    position = {name: i for i, name in enumerate(promoted)}
    patterns: list[tuple[str, ...]] = []
    for branch in policy.branches:
        allowed: list[set[str] | None] = [None] * len(promoted)
        for rule in branch:
            if rule.name not in position:
                shown = ", ".join(promoted) or "none"
                return CompileResult(
                    reason=f"key {rule.name!r} is not a promoted attribute (promoted: {shown})"
                )
            tokens = {encode_token(str(v)) for v in rule.exact}
            if rule.exists_false:
                tokens.add(ABSENT_TOKEN)
            slot = position[rule.name]
            current = allowed[slot]
            allowed[slot] = tokens if current is None else current & tokens
        choices = [sorted(a) if a is not None else ["*"] for a in allowed]
        patterns.extend(itertools.product(*choices))
    unique = sorted(set(patterns))
    kept = [p for p in unique if not any(q != p and _covers(q, p) for q in unique)]
    for a, b in itertools.combinations(kept, 2):
        if _overlap(a, b):
            return CompileResult(
                reason=(
                    f"$or alternatives overlap ({_join(prefix, a)} and {_join(prefix, b)}); "
                    "JetStream refuses overlapping filter subjects"
                )
            )
    if len(kept) > MAX_COMBINATIONS:
        return CompileResult(reason=f"{len(kept)} subjects, more than {MAX_COMBINATIONS}")
    return CompileResult(subjects=[_join(prefix, p) for p in kept])


def _join(prefix: str, tokens: Iterable[str]) -> str:
    return ".".join([prefix, *tokens])


def choose_promoted(policies: Sequence[FilterPolicy], max_tokens: int = 3) -> list[str]:
    """The attributes to promote so the most policies compile.

    Ties go to fewer attributes, then to the alphabetically first set. The result lists the
    attributes most policies use first (then by name), so output is stable for equal input.
    """
    needs: list[frozenset[str]] = []
    for policy in policies:
        if _policy_reason(policy) is not None:
            continue
        keys = frozenset(policy.keys)
        if len(keys) > max_tokens:
            continue
        # Overlap between $or alternatives does not depend on extra promoted positions.
        if not compile_to_subjects(policy, sorted(keys), "x").exact:
            continue
        needs.append(keys)
    if not needs:
        return []
    distinct = set(needs)
    candidates: set[frozenset[str]] = {k for k in distinct}
    frontier = set(candidates)
    while frontier:
        grown = {c | d for c in frontier for d in distinct if len(c | d) <= max_tokens}
        frontier = grown - candidates
        candidates |= frontier

    def score(candidate: frozenset[str]) -> tuple[int, int, list[str]]:
        served = sum(1 for k in needs if k <= candidate)
        return (-served, len(candidate), sorted(candidate))

    best = min(candidates, key=score)
    usage = {name: sum(1 for k in needs if name in k) for name in best}
    return sorted(best, key=lambda name: (-usage[name], name))
