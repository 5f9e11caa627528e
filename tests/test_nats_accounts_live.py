"""A per-account plan on a real nats-server in operator mode: each AWS account's streams in its
own NATS account, a topic in shop reaching billing's queue across the boundary, and billing's
identities unable to read shop's streams."""

from __future__ import annotations

import asyncio
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
from snsq2nats.auth.output import write_identities
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.files import document_json
from snsq2nats.plan.accounts import account_plan, admin_credentials, apply_order
from snsq2nats.plan.model import Plan
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


def _jwt_auth(tmp_path: Path, plan: Plan, url: str) -> tuple[Path, dict[str, Any]]:
    """`auth --format jwt` of a per-account plan into a directory, and the server settings."""
    generated = identities(plan)
    auth_dir = tmp_path / "nats-auth"
    write_identities(
        generated,
        auth_dir,
        fmt="jwt",
        credentials="password",
        tls_user="{name}",
        url=url,
        plan=plan,
    )
    # The same seeds again: the settings as data, for the test server.
    settings = write_jwt(generated, auth_dir, plan.nats_accounts, plan.crossings).settings
    return auth_dir, settings


async def _stream_names(url: str, creds: Path) -> list[str]:
    admin = Identity("snsq2nats-admin", "admin", None, (), ())
    errors: list[str] = []
    nc = await _connect(url, creds, admin, errors)
    try:
        reply = await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=10)
        names: list[str] = json.loads(reply.data).get("streams") or []
        return sorted(names)
    finally:
        await nc.close()


def test_apply_connects_to_each_account_with_its_admin(tmp_path: Path) -> None:
    """`apply PLAN --grants DIR`: each NATS account's part with that account's admin creds."""
    from click.testing import CliRunner

    from snsq2nats.cli import main

    plan = plan_of(tmp_path, PER_ACCOUNT)
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan))
    server = NatsServer(name="natsacct-apply")
    auth_dir, settings = _jwt_auth(tmp_path, plan, server.url)
    server.extra_config = settings
    with server:
        run = CliRunner().invoke(
            main,
            ["apply", str(plan_file), "--grants", str(auth_dir), "--server", server.url],
        )
        assert run.exit_code == 0, run.output
        for account in plan.nats_accounts:
            creds = admin_credentials(plan, auth_dir)[account.name]
            assert asyncio.run(_stream_names(server.url, creds)) == account.streams
        # Applied again: nothing left to do in any account.
        again = CliRunner().invoke(
            main,
            ["apply", str(plan_file), "--grants", str(auth_dir), "--server", server.url],
        )
        assert again.exit_code == 0, again.output
        assert again.output.count("already as planned") == len(plan.nats_accounts)


def test_apply_of_a_per_account_plan_needs_the_auth_output(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from snsq2nats.cli import main

    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan_of(tmp_path, PER_ACCOUNT)))
    run = CliRunner().invoke(
        main, ["apply", str(plan_file), "--ignore-grants", "--server", "nats://127.0.0.1:1"]
    )
    assert run.exit_code != 0
    assert "--grants DIR" in run.output and "own NATS account" in run.output


def test_config_format_refuses_a_per_account_plan(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from snsq2nats.cli import main

    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan_of(tmp_path, PER_ACCOUNT)))
    run = CliRunner().invoke(main, ["auth", "--plan", str(plan_file), "-o", str(tmp_path / "out")])
    assert run.exit_code != 0
    assert "--format config cannot express" in run.output and "--format jwt" in run.output
    assert not (tmp_path / "out" / "creds").exists()


def test_plan_reads_each_accounts_live_state_with_its_admin(tmp_path: Path) -> None:
    """`plan --grants DIR` of an applied per-account estate: every object of every NATS account
    is found as it is ("no change"), though the home connection sees only its own streams.
    A new queue in billing is then exactly its stream and consumer to create, and `apply
    --grants` takes that plan (auth ran for the grown estate, so its admin may create it)."""
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from snsq2nats.jetstream.spec import ServerInfo
    from snsq2nats.plan.pipeline import assemble_plan
    from snsq2nats.plan.rules import load_rules
    from tests.test_nats_accounts import _queue, estate

    plan = plan_of(tmp_path, PER_ACCOUNT)
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan))
    inventory_file = tmp_path / "inventory.json"
    inventory_file.write_bytes(document_json(estate()))
    grown = estate()
    grown.queues.append(_queue(BILLING, "refunds"))
    server = NatsServer(name="natsacct-replan")
    # The admin's rights name the streams of the plan auth ran for: the grown estate's, so the
    # new queue's stream may be created later without a new `auth` (and a server reload).
    grown_plan = assemble_plan(
        grown,
        load_rules([tmp_path / "mapping.yaml"]),
        None,
        server=ServerInfo(reachable=False, note="offline"),
    )
    auth_dir, settings = _jwt_auth(tmp_path, grown_plan, server.url)
    server.extra_config = settings
    context = auth_dir / "contexts" / "snsq2nats-admin.json"
    planning = [
        "plan",
        "--inventory",
        str(inventory_file),
        "--mapping",
        str(tmp_path / "mapping.yaml"),
    ]
    connecting = ["--context", str(context), "--grants", str(auth_dir)]

    def replan(output: Path) -> dict[str, Any]:
        run = CliRunner().invoke(main, [*planning, *connecting, "-o", str(output), "--json"])
        assert run.exit_code == 0, run.output
        doc: dict[str, Any] = json.loads(run.stdout)
        return doc

    with server:
        applied = CliRunner().invoke(
            main, ["apply", str(plan_file), "--grants", str(auth_dir), "--server", server.url]
        )
        assert applied.exit_code == 0, applied.output
        again = replan(tmp_path / "again.json")
        assert {c["action"] for c in again["changes"]} == {"noop"}, again["changes"]
        assert len(again["changes"]) == len(plan.changes)

        # The estate grows: a queue in billing only.
        inventory_file.write_bytes(document_json(grown))
        second = tmp_path / "second.json"
        doc = replan(second)
        pending = [c for c in doc["changes"] if c["action"] != "noop"]
        assert {c["action"] for c in pending} == {"create"}, pending
        assert {c["source_arn"] for c in pending} == {_queue(BILLING, "refunds").arn}, pending
        applied = CliRunner().invoke(
            main,
            ["apply", str(second), "--grants", str(auth_dir), "--server", server.url],
        )
        assert applied.exit_code == 0, applied.output
        billing = admin_credentials(plan, auth_dir)["billing"]
        (refunds,) = [c["stream"] for c in pending if c["type"] == "stream"]
        assert refunds in asyncio.run(_stream_names(server.url, billing))
        # And now nothing is left to do anywhere.
        done = replan(tmp_path / "done.json")
        assert {c["action"] for c in done["changes"]} == {"noop"}, done["changes"]


def test_plan_of_a_per_account_estate_without_the_auth_output_names_grants(
    tmp_path: Path,
) -> None:
    """A per-account plan against a reachable server but without `auth`'s output cannot read
    the other accounts: one error naming --grants, and --offline for before anything exists."""
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from tests.test_nats_accounts import estate

    plan_of(tmp_path, PER_ACCOUNT)  # writes the mapping
    inventory_file = tmp_path / "inventory.json"
    inventory_file.write_bytes(document_json(estate()))
    words = [
        "plan",
        "--inventory",
        str(inventory_file),
        "--mapping",
        str(tmp_path / "mapping.yaml"),
    ]
    with NatsServer(name="natsacct-replan-noauth") as server:
        run = CliRunner().invoke(main, [*words, "--server", server.url])
    assert run.exit_code == 1, run.output
    assert "--grants DIR" in run.output and "--offline" in run.output, run.output
    assert "Traceback" not in run.output
