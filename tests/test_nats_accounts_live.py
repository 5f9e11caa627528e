"""A per-account plan on a real nats-server in operator mode: each AWS account's streams in its
own NATS account, a topic in shop reaching billing's queue across the boundary, and billing's
identities unable to read shop's streams."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import nats
from nats.errors import NoRespondersError

from snsq2nats.apply import apply_plan
from snsq2nats.auth.identities import Identity, identities
from snsq2nats.auth.jwt import write_jwt
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.plan.accounts import account_plan, apply_order
from tests.fixtures.wait import until
from tests.test_nats_accounts import BILLING, PER_ACCOUNT, SHOP, plan_of


def _claims(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    doc: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return doc


async def _connect(url: str, creds: Path, identity: Identity, errors: list[str]) -> Any:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    return await nats.connect(
        servers=[url],
        user_credentials=str(creds),
        inbox_prefix=identity.inbox_prefix,
        error_cb=on_error,
        allow_reconnect=False,
    )


async def test_topic_in_one_account_reaches_a_queue_in_another(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, PER_ACCOUNT)
    generated = identities(plan)
    by_name = {i.name: i for i in generated}
    written = write_jwt(generated, tmp_path / "jwt", plan.nats_accounts, plan.crossings)
    assert written.accounts is not None
    # The server config carries one JWT per NATS account, sized and linked as planned.
    preload: dict[str, str] = written.settings["resolver_preload"]
    names = {key: _claims(token)["name"] for key, token in preload.items()}
    claims = {names[key]: _claims(token)["nats"] for key, token in preload.items()}
    shop, billing = claims["shop"], claims["billing"]
    assert billing["limits"]["streams"] == next(
        a.max_streams for a in plan.nats_accounts if a.name == "billing"
    )
    assert {e["subject"] for e in shop["exports"]} >= {
        "$JS.API.CONSUMER.CREATE.shop_sns_events.>",
        "snsq2nats.deliver.billing.shop_sns_events.>",
    }
    assert "imports" not in shop and "exports" not in billing
    assert {i["account"] for i in billing["imports"]} == {
        key for key, name in names.items() if name == "shop"
    }

    def serving(role: str, arn_tail: str) -> Identity:
        return next(i for i in generated if i.role == role and (i.serves or "").endswith(arn_tail))

    publisher = serving("publisher", f"{SHOP}:events")
    consumer = serving("consumer", f"{BILLING}:orders")
    assert written.accounts["shop"][publisher.name] == written.creds[publisher.name]
    assert consumer.name in written.accounts["billing"]
    assert consumer.name not in written.accounts["shop"]
    queue = next(r for r in plan.resources if r.source_arn.endswith(f"{BILLING}:orders"))
    topic = next(r for r in plan.resources if r.source_arn.endswith(f"{SHOP}:events"))
    assert queue.stream and queue.consumer and topic.publish_subject and topic.stream

    with NatsServer(name="natsacct", extra_config=written.settings) as server:
        # Each account applied with its own admin, origins first.
        order = apply_order(plan)
        assert order.index("shop") < order.index("billing")
        for account in order:
            admin = by_name["snsq2nats-admin"]
            errors: list[str] = []
            nc = await _connect(server.url, written.accounts[account][admin.name], admin, errors)
            try:
                result = await apply_plan(nc, account_plan(plan, account), allow_destructive=False)
                assert result.ok, [o.detail for o in result.failed]
                assert not errors, errors
            finally:
                await nc.close()

        errors = []
        pub = await _connect(server.url, written.creds[publisher.name], publisher, errors)
        try:
            ack = await pub.jetstream().publish(topic.publish_subject, b"order-1")
            assert ack.stream == topic.stream
        finally:
            await pub.close()

        errors = []
        reader = await _connect(server.url, written.creds[consumer.name], consumer, errors)
        try:
            sub = await reader.jetstream().pull_subscribe_bind(queue.consumer, queue.stream)

            async def one() -> Any:
                try:
                    msgs = await sub.fetch(1, timeout=1)
                except TimeoutError:
                    return None
                return msgs[0]

            got: list[Any] = []

            async def received() -> bool:
                msg = await one()
                if msg is not None:
                    got.append(msg)
                return bool(got)

            await until(received, what="billing's queue receives shop's topic message")
            assert got[0].data == b"order-1"
            await got[0].ack_sync()
            # Billing's consumer cannot read shop's streams: not in its account, and the
            # imported API prefix is not among its grants.
            await reader.publish(f"$JS.shop.API.CONSUMER.CREATE.{topic.stream}.x", b"{}")
            await until(
                lambda: any("permissions violation for publish" in e for e in errors),
                what="refusal of the imported API",
            )
            with contextlib.suppress(NoRespondersError, TimeoutError):
                await reader.request(f"$JS.API.STREAM.INFO.{topic.stream}", b"", timeout=2)
            assert any(f"stream.info.{topic.stream}".lower() in e for e in errors)
        finally:
            await reader.close()
