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
    ├── ApplyError                 apply refused to start (stale plan, conflict, destructive
    │                              change) or stopped midway
    ├── GrantsOutdated             the grants `auth` generated do not cover the plan to apply
    ├── ExportError                the plan holds what an export target cannot express
    ├── JetStreamApiError          the JetStream API answered with an error, or not at all
    ├── DrainIncomplete            a stopping bridge left messages undelivered (none lost)
    ├── GatewayError               a request the gateway answers with an AWS error (code,
    │   │                          HTTP status, sender or receiver fault), never a crash
    │   └── GatewayAuthError       no, an incomplete or a wrong SigV4 signature; an unknown key
    └── LocalNatsError             a local nats-server (demo, tests, benchmarks) could not be
                                   found, started or made ready

Anything else that escapes a command is a bug: the CLI prints it as one `unexpected` line and
shows the traceback only under `--debug`.
"""

from __future__ import annotations

from collections.abc import Mapping


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


class ApplyError(SnsqError):
    """apply refused to start (stale plan, conflict, destructive change) or stopped midway."""


class ExportError(SnsqError):
    """The plan holds something the target cannot express without changing its meaning."""


class JetStreamApiError(SnsqError):
    """The JetStream API answered with an error (or not at all).

    `err_code` is the server's stable JetStream error code (10052, 10058, …), `code` the
    HTTP-like status; both are None when the API did not answer.
    """

    def __init__(
        self,
        what: str,
        *,
        err_code: int | None = None,
        code: int | None = None,
        description: str | None = None,
        subject: str | None = None,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(what, where=where, hint=hint)
        self.err_code = err_code
        self.code = code
        self.description = description
        self.subject = subject


class GrantsOutdated(SnsqError):
    """The grants `snsq2nats auth` generated do not cover the plan about to be applied."""


class DrainIncomplete(SnsqError):
    """The bridge stopped before relaying everything it held (nothing is lost: SQS and NATS
    deliver it again)."""

    def __init__(self, why: str, left: Mapping[str, int]) -> None:
        held = sum(left.values())
        super().__init__(
            f"stopped with {held} message(s) undelivered ({why})",
            where=", ".join(f"{count} on {name}" for name, count in sorted(left.items())) or None,
            hint="nothing is lost: SQS messages return to their queue after the visibility "
            "timeout and NATS messages are redelivered after the ack wait; start the bridge "
            "again to relay them",
        )
        self.left = dict(left)


class GatewayError(SnsqError):
    """A request the gateway refuses or cannot serve, in AWS's terms: the protocol layer renders
    `code` (e.g. `AWS.SimpleQueueService.NonExistentQueue`) and `message` in the shape the
    SDKs parse; `sender` is False for a server-side fault (HTTP 5xx)."""

    def __init__(self, code: str, message: str, *, status: int = 400, sender: bool = True) -> None:
        super().__init__(message, where=code)
        self.code = code
        self.message = message
        self.status = status
        self.sender = sender


class GatewayAuthError(GatewayError):
    """SigV4 verification failed: AWS answers these with HTTP 403."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=403)


class LocalNatsError(SnsqError):
    """A local nats-server could not be found, started or made ready."""
