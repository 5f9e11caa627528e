"""The application object every command receives (`@pass_app`): one Output, one way to talk
to NATS, one way out for an expected failure.

Heavy modules (boto3, nats) are imported inside the methods so `--help` stays instant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from snsq2nats.console import Output
from snsq2nats.errors import SnsqError

if TYPE_CHECKING:
    from snsq2nats.jetstream.connect import NatsOptions

T = TypeVar("T")


class Application:
    """What a command needs besides its own options; built once per invocation."""

    def __init__(self) -> None:
        self.out = Output()

    def abort(self, err: SnsqError | None = None, *, code: int | None = None) -> NoReturn:
        """The one way out for an expected failure: its line (if any), then its exit code
        (`err`'s own unless `code` says otherwise; 1 without either)."""
        if err is not None:
            self.out.error(err)
        raise click.exceptions.Exit(code if code is not None else err.exit_code if err else 1)

    def run_nats(self, nats: NatsOptions, name: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run `work` with a NATS connection named `name`, closed whatever happens."""
        import asyncio

        return asyncio.run(with_nats(nats, name, work))


async def with_nats(nats: NatsOptions, name: str, work: Callable[[Any], Awaitable[T]]) -> T:
    from snsq2nats.jetstream.connect import connect_nats

    nc = await connect_nats(nats, name=name)
    try:
        return await work(nc)
    finally:
        await nc.close()


pass_app = click.make_pass_decorator(Application, ensure=True)


class FunnelGroup(click.Group):
    """Expected failures print one line and exit non-zero; nothing else reaches the user raw.

    Anything else is a bug: one line names it and exits 1, and `--debug` lets the traceback
    through instead. click's own exceptions (usage errors, `ctx.exit`) pass untouched.
    """

    def invoke(self, ctx: click.Context) -> Any:
        app = ctx.ensure_object(Application)
        try:
            return super().invoke(ctx)
        except SnsqError as err:
            app.abort(err)
        except KeyboardInterrupt:
            app.out.info("interrupted")
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            app.out.unexpected(exc)
            ctx.exit(1)
