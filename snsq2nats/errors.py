"""Every failure snsq2nats expects, in one place.

Expected failures carry three things a person needs: what went wrong, where, and what to do.
Only the CLI turns them into a one-line message and an exit code; library code raises.

    SnsqError                      what / where / hint; always exit code 1 (2 means
                                   "changes pending" for plan --detailed-exitcode)
    ├── UsageError                 bad flags, bad files, bad mapping rules
    │   ├── InventoryFileError     an inventory or plan file that cannot be read
    │   └── MappingError           a mapping rule that does not validate
    ├── FilterPolicyError          a filter policy SNS itself would reject
    ├── ConnectError               an endpoint that cannot be reached or refuses us
    │   ├── AwsConnectError
    │   └── NatsConnectError
    │       └── NatsRefusedError   the server answered but refused us (credentials, TLS)
    │           └── PermissionDeniedError  connected, but this identity may not publish or
    │                                      subscribe where the command needs to
    ├── ScanError                  AWS answered, but not in a way the scan can continue from
    ├── CutoverError               a move that cannot be made now: the plan is not applied,
    │                              a bridge does not confirm
    ├── BucketMissing              a KV bucket `apply` creates (cutover state, fleet, applied
    │                              revision) is not on the server: run `snsq2nats apply`
    └── LocalNatsError             a local nats-server (demo, tests, benchmarks) could not be
                                   found, started or made ready

Anything else that escapes a command is a bug: the CLI prints it as one `unexpected` line and
shows the traceback only under `--debug`.
"""

from __future__ import annotations


class SnsqError(Exception):
    """An expected failure: reported as one line, never a traceback."""

    exit_code = 1

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.hint = hint

    def one_line(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"(at {self.where})")
        line = " ".join(parts)
        if self.hint:
            line = f"{line}: {self.hint}"
        return line


class UsageError(SnsqError):
    pass


class InventoryFileError(UsageError):
    pass


class MappingError(UsageError):
    pass


class FilterPolicyError(SnsqError):
    pass


class ConnectError(SnsqError):
    pass


class AwsConnectError(ConnectError):
    pass


class NatsConnectError(ConnectError):
    pass


class NatsRefusedError(NatsConnectError):
    """A server that is up said no: never mistaken for "no server reachable"."""


class PermissionDeniedError(NatsRefusedError):
    """The server refused one publish or subscription: names the subject and the identity."""


class ScanError(SnsqError):
    pass


class CutoverError(SnsqError):
    pass


class BucketMissing(SnsqError):
    """A KV bucket the plan declares is not on the server: the plan was not applied (or was
    made by an older version that did not declare it)."""

    def __init__(self, bucket: str, *, where: str | None = None) -> None:
        super().__init__(
            f"the KV bucket {bucket} does not exist",
            where=where,
            hint="run `snsq2nats apply` with a plan made by this version (it creates the bucket)",
        )
        self.bucket = bucket


class LocalNatsError(SnsqError):
    """A local nats-server could not be found, started or made ready."""
