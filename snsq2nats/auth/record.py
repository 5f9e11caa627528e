"""What `auth` generated, kept beside it, so `apply` can tell when a plan outgrows the grants.

`snsq2nats auth` writes `grants.json` into its output directory: every identity's publish and
subscribe permissions, and the options it was run with (never a secret). `apply` reads it
(from the directory of the natscli context it connects with, `--grants`, or `./nats-auth`)
and, before changing anything, checks that every identity the plan implies exists there with
grants that cover what it now needs. When they do not, it names the identities and the
`snsq2nats auth` command that regenerates them: a re-plan never reaches a running bridge, or
the admin itself, as a permission refusal.

A file, not a server-side record: `auth` never connects to NATS (its output is loaded by the
operator, by a config reload or a JWT push), and the file sits next to the config it describes.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snsq2nats.auth.identities import Identity
from snsq2nats.errors import GrantsOutdated as GrantsOutdated
from snsq2nats.errors import SnsqError, UsageError

RECORD = "grants.json"
FORMAT_VERSION = 1
DEFAULT_DIR = Path("nats-auth")


@dataclass(frozen=True)
class Merged:
    """An identity the plan implies that `auth --iam` merged into an IAM principal's: its
    grants are `into`'s, less `withheld` (what that principal's IAM policies deny)."""

    into: str
    withheld: list[str] = field(default_factory=list)


@dataclass
class GrantsRecord:
    path: Path
    generated: str
    options: list[str]
    """`auth`'s options besides the plan and the output directory (`--format jwt`, …)."""
    publish: dict[str, list[str]]
    subscribe: dict[str, list[str]]
    merged: dict[str, Merged] = field(default_factory=dict)
    """`auth --iam`: the resource-policy principals' identities merged into IAM principals'."""

    @property
    def directory(self) -> Path:
        return self.path.parent


@dataclass
class Gap:
    identity: str
    missing: list[str] = field(default_factory=list)
    new: bool = False
    """The plan implies an identity `auth` never generated (no credentials exist for it)."""

    def describe(self, shown: int = 3) -> str:
        if self.new:
            return f"{self.identity} (new: no credentials yet)"
        more = len(self.missing) - shown
        listed = ", ".join(self.missing[:shown]) + (f" and {more} more" if more > 0 else "")
        return f"{self.identity} lacks {listed}"


def merged_identities(
    plain: list[Identity], generated: list[Identity], aliases: dict[str, str]
) -> dict[str, Merged]:
    """For each identity of `plain` (what the plan implies) that `aliases` merges into one of
    `generated`: what of its grants the merged identity does not have (withheld by IAM)."""
    by_name = {i.name: i for i in generated}
    out = {}
    for identity in plain:
        into = aliases.get(identity.name)
        if into is None or into not in by_name:
            continue
        granted = by_name[into].publish
        withheld = [s for s in identity.publish if not any(covers(g, s) for g in granted)]
        out[identity.name] = Merged(into, withheld)
    return out


def record_text(
    identities: list[Identity], options: list[str], merged: dict[str, Merged] | None = None
) -> str:
    body: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "generated_by": "snsq2nats auth",
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": options,
        "identities": {
            i.name: {"role": i.role, "publish": list(i.publish), "subscribe": list(i.subscribe)}
            for i in identities
        },
    }
    if merged:
        body["merged"] = {
            name: {"into": m.into, "withheld": list(m.withheld)} for name, m in merged.items()
        }
    return json.dumps(body, indent=2) + "\n"


def load_record(path: Path) -> GrantsRecord | None:
    """The record at `path` (a file or the directory holding it); None when there is none."""
    if path.is_dir():
        path = path / RECORD
    if not path.is_file():
        return None
    try:
        body: Any = json.loads(path.read_text(encoding="utf-8"))
        identities = body["identities"]
        return GrantsRecord(
            path=path,
            generated=str(body.get("generated") or "?"),
            options=[str(o) for o in body.get("options") or []],
            publish={n: list(v.get("publish") or []) for n, v in identities.items()},
            subscribe={n: list(v.get("subscribe") or []) for n, v in identities.items()},
            merged={
                n: Merged(str(v["into"]), [str(s) for s in v.get("withheld") or []])
                for n, v in (body.get("merged") or {}).items()
            },
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SnsqError(
            "the grants record is not one `snsq2nats auth` wrote",
            where=str(path),
            hint="re-run `snsq2nats auth` to rewrite it (secrets are kept)",
        ) from None


def find_record(given: Path | None, context: str | None) -> GrantsRecord | None:
    """The record `apply` checks against: `given` (which must hold one), else beside the
    natscli `context` file in use (auth writes `<dir>/contexts/NAME.json` and
    `<dir>/grants.json`), else in ./nats-auth; None when there is none."""
    if given is not None:
        record = load_record(given)
        if record is None:
            raise UsageError(f"no grants record at {given}", hint="run `snsq2nats auth` first")
        return record
    if context and Path(context).is_file() and Path(context).parent.name == "contexts":
        record = load_record(Path(context).parent.parent)
        if record is not None:
            return record
    return load_record(DEFAULT_DIR)


def covers(pattern: str, subject: str) -> bool:
    """Does the permission `pattern` allow everything `subject` (itself maybe a pattern) names?"""
    wanted = subject.split(".")
    for i, token in enumerate(pattern.split(".")):
        if token == ">":
            return len(wanted) > i
        if i >= len(wanted) or wanted[i] == ">":
            return False
        if token != "*" and token != wanted[i]:
            return False
    return len(wanted) == len(pattern.split("."))


def gaps(record: GrantsRecord, identities: list[Identity]) -> list[Gap]:
    """The identities whose recorded grants do not cover what the plan needs of them."""
    out = []
    for identity in identities:
        granted = record.publish.get(identity.name)
        merged = record.merged.get(identity.name)
        if granted is None and merged is not None and merged.into in record.publish:
            # Its principal connects as the IAM principal's identity, with that one's inbox;
            # what IAM denies it was withheld on purpose, not outgrown.
            granted = record.publish[merged.into] + merged.withheld
            missing = [s for s in identity.publish if not any(covers(g, s) for g in granted)]
            if missing:
                out.append(Gap(f"{identity.name} (in {merged.into})", missing))
            continue
        if granted is None:
            out.append(Gap(identity.name, new=True))
            continue
        missing = [s for s in identity.publish if not any(covers(g, s) for g in granted)]
        inboxes = record.subscribe.get(identity.name, [])
        missing += [s for s in identity.subscribe if not any(covers(g, s) for g in inboxes)]
        if missing:
            out.append(Gap(identity.name, missing))
    return out


def regenerate_command(record: GrantsRecord, plan_args: list[str]) -> str:
    """The `snsq2nats auth` command that regenerates these grants for the plan `plan_args`
    names (`--plan FILE`, or the planning options)."""
    words = ["snsq2nats", "auth", *plan_args, "-o", str(record.directory), *record.options]
    return shlex.join(words)


def outdated_error(record: GrantsRecord, found: list[Gap], plan_args: list[str]) -> GrantsOutdated:
    shown = "; ".join(g.describe() for g in found[:6])
    more = len(found) - 6
    return GrantsOutdated(
        f"the grants `snsq2nats auth` generated do not cover this plan: {shown}"
        + (f"; and {more} more identit(ies)" if more > 0 else ""),
        where=f"{record.path}, generated {record.generated}",
        hint=f"regenerate them: `{regenerate_command(record, plan_args)}`, load them into the "
        "server (reload its config; with JWTs the new creds files carry the permissions), "
        "then apply again; nothing was applied (--ignore-grants applies anyway)",
    )
