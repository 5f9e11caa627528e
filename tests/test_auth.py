"""Generated NATS identities, proven on a real nats-server.

The server runs with exactly the generated `authorization.users`; each identity then tries what
it is for (and succeeds) and what its neighbours are for (and is refused). A refusal is the
server's permissions-violation error, waited for as an event, never a timeout guessed at.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import pytest

from snsq2nats.apply import apply_plan
from snsq2nats.auth.config import Written, render_authorization, write_auth
from snsq2nats.auth.identities import Identity, identities
from snsq2nats.auth.jwt import nsc_script, write_jwt
from snsq2nats.demo.nats_server import NatsServer, find_nats_server, nats_server_version
from snsq2nats.files import document_json
from snsq2nats.inventory import load_inventory
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules
from tests.fixtures.wait import retrying, until

DATA = Path(__file__).parent / "data"
SHOP = DATA / "mapping" / "shop_inventory.json"
SHOP_CUTOVER = DATA / "mapping" / "shop_cutover.yaml"


def shop_plan(version: str) -> Plan:
    return assemble_plan(
        load_inventory(SHOP),
        load_rules([SHOP_CUTOVER]),
        None,
        server=ServerInfo(reachable=False, version=version),
    )


@dataclass
class Estate:
    server: NatsServer
    plan: Plan
    written: Written | None
    by_name: dict[str, Identity]
    creds: dict[str, Path] | None = None

    def password(self, name: str) -> str:
        assert self.written is not None
        return self.written.secrets[name].read_text().strip()

    def credentials(self, name: str) -> dict[str, Any]:
        if self.creds is not None:
            return {"user_credentials": str(self.creds[name])}
        return {"user": name, "password": self.password(name)}


class Client:
    """A connection as one identity, recording the server's permission refusals."""

    def __init__(self, estate: Estate, name: str) -> None:
        self.estate, self.name = estate, name
        self.errors: list[str] = []
        self.nc: Any = None

    async def __aenter__(self) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.nc = await nats.connect(
            self.estate.server.url,
            **self.estate.credentials(self.name),
            inbox_prefix=self.estate.by_name[self.name].inbox_prefix,
            error_cb=on_error,
            allow_reconnect=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def send(self, subject: str, body: bytes, stream: str) -> None:
        """Publish with a PubAck from `stream`: the grant to publish and read its inbox."""
        ack = await self.nc.jetstream().publish(subject, body)
        assert ack.stream == stream

    async def pull_one(self, durable: str, stream: str) -> Any:
        """Bind to an existing durable and fetch one message (no API call but the pull)."""
        sub = await self.nc.jetstream().pull_subscribe_bind(durable, stream)
        (msg,) = await sub.fetch(1, timeout=10)
        return msg

    async def publish_refused(self, subject: str, body: bytes = b"") -> None:
        await self.nc.publish(subject, body)
        await self.refused("publish", subject.lower())

    async def subscribe_refused(self, subject: str) -> None:
        await self.nc.subscribe(subject)
        await self.refused("subscription", subject.lower())

    async def refused(self, what: str, subject: str) -> None:
        await until(
            lambda: any(
                f"permissions violation for {what}" in e and subject in e for e in self.errors
            ),
            what=f"{self.name}: refusal of {what} {subject}",
        )


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    workdir = tmp_path_factory.mktemp("auth")
    plan = shop_plan(probe_version())
    generated = identities(plan)
    server = NatsServer(name="auth")
    written = write_auth(generated, workdir / "out", mode="password", url=server.url)
    server.users = written.users
    server.start()
    try:
        estate = Estate(server, plan, written, {i.name: i for i in generated})
        asyncio.run(apply_as_admin(estate))
        yield estate
    finally:
        server.stop()


def probe_version() -> str:
    return nats_server_version()


async def apply_as_admin(estate: Estate) -> None:
    """apply needs nothing beyond the admin identity's grants."""
    async with Client(estate, "snsq2nats-admin") as admin:
        result = await apply_plan(admin.nc, estate.plan, allow_destructive=False)
        assert result.ok, [o.detail for o in result.failed]
        assert not admin.errors, admin.errors


def test_secrets_are_private_files_and_never_in_the_config(estate: Estate) -> None:
    assert estate.written is not None
    conf = estate.written.config.read_text()
    for name, path in estate.written.secrets.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert estate.password(name) not in conf
    for path in estate.written.contexts.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(estate.written.config.stat().st_mode) == 0o600
    assert "$2" in conf  # bcrypt hashes


def test_generated_config_is_accepted_by_nats_server(estate: Estate, tmp_path: Path) -> None:
    assert estate.written is not None
    auth = tmp_path / "snsq2nats-auth.conf"
    auth.write_text(render_authorization(estate.written.users))
    main = tmp_path / "server.conf"
    main.write_text(f'port: 4222\ninclude "{auth.name}"\n')
    check = subprocess.run(
        [find_nats_server(), "-t", "-c", str(main)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr + check.stdout


def test_contexts_carry_url_credentials_and_inbox_prefix(estate: Estate) -> None:
    assert estate.written is not None
    ctx = json.loads(estate.written.contexts["sqs_orders-billing-consumer"].read_text())
    assert ctx["user"] == "sqs_orders-billing-consumer"
    assert ctx["inbox_prefix"] == "_INBOX_sqs_orders-billing-consumer"
    assert ctx["password"] == estate.password("sqs_orders-billing-consumer")


async def test_queue_producer_sends_to_its_queue_only(estate: Estate) -> None:
    async with Client(estate, "sqs_orders-billing-producer") as producer:
        await producer.send("sqs.orders-billing", b"order-1", "sqs_orders-billing")
        await producer.publish_refused("sqs.orders-fraud", b"not mine")
        await producer.publish_refused("$JS.API.STREAM.DELETE.sqs_orders-billing", b"")
        await producer.subscribe_refused("_INBOX_sqs_orders-billing-consumer.>")
        await producer.subscribe_refused("sqs.orders-billing")


async def test_queue_consumer_pulls_and_its_acks_remove_the_message(estate: Estate) -> None:
    async with Client(estate, "sqs_orders-shipping-producer") as producer:
        await producer.nc.jetstream().publish("sqs.orders-shipping", b"parcel")
    async with Client(estate, "sqs_orders-shipping-consumer") as consumer:
        msg = await consumer.pull_one("orders-shipping", "sqs_orders-shipping")
        js = consumer.nc.jetstream()
        assert msg.data == b"parcel"
        await msg.ack_sync()
        info = await js.consumer_info("sqs_orders-shipping", "orders-shipping")
        assert info.num_ack_pending == 0 and info.num_pending == 0
        # Neighbours' consumers, the stream admin API and producing are all refused.
        await consumer.publish_refused(
            "$JS.API.CONSUMER.MSG.NEXT.sqs_orders-billing.orders-billing", b"1"
        )
        await consumer.publish_refused(
            "$JS.ACK.sqs_orders-billing.orders-billing.1.1.1.1.0", b"+ACK"
        )
        await consumer.publish_refused("$JS.API.STREAM.PURGE.sqs_orders-shipping", b"")
        await consumer.publish_refused("sqs.orders-shipping", b"not a producer")


async def test_topic_publisher_reaches_the_topic_stream_not_queues(estate: Estate) -> None:
    async with Client(estate, "sns_orders-publisher") as publisher:
        await publisher.send("sns.orders.order_placed.eu", b"{}", "sns_orders")
        await publisher.publish_refused("sqs.orders-billing", b"x")
        await publisher.publish_refused("aws.sns.orders.order_placed.eu", b"x")


async def test_topic_subscriber_owns_one_durable_on_the_topic_stream(estate: Estate) -> None:
    """A NATS application reading the topic itself creates its own durable (named after its
    identity) on the topic stream, pulls and acks there; any other consumer name is refused."""
    name = "sns_orders-subscriber"
    async with Client(estate, name) as subscriber:
        config = {
            "name": name,
            "durable_name": name,
            "filter_subject": "sns.orders.>",
            "ack_policy": "explicit",
        }
        created = await subscriber.nc.request(
            f"$JS.API.CONSUMER.CREATE.sns_orders.{name}",
            json.dumps({"stream_name": "sns_orders", "config": config}).encode(),
            timeout=10,
        )
        assert "error" not in json.loads(created.data), created.data
        async with Client(estate, "sns_orders-publisher") as publisher:
            await publisher.nc.jetstream().publish("sns.orders.order_placed.us", b"tap")
        msg = await subscriber.pull_one(name, "sns_orders")
        await msg.ack_sync()
        await subscriber.publish_refused("$JS.API.CONSUMER.CREATE.sns_orders.someone-else")
        await subscriber.publish_refused(
            "$JS.API.CONSUMER.MSG.NEXT.sqs_orders-billing.orders-billing"
        )


async def test_admin_is_scoped_to_the_managed_streams(estate: Estate) -> None:
    async with Client(estate, "snsq2nats-admin") as admin:
        await admin.publish_refused("$JS.API.STREAM.CREATE.someone_elses", b"{}")
        names = await admin.nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=10)
        assert "sqs_orders-billing" in json.loads(names.data)["streams"]


async def test_bridge_runs_a_fleet_member_with_its_grants_and_no_more(estate: Estate) -> None:
    """The generated bridge identity joins the fleet (heartbeat, leases, watch) unrefused,
    and may not touch the bucket's stream or any other bucket."""
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.fleet import Fleet
    from snsq2nats.bridge.runtime import run_bridge

    routes = estate.plan.routes
    held: set[str] = set()

    async def runner(ctx: BridgeContext, route: Any) -> None:
        held.add(route.name)
        await ctx.stopping.wait()

    async with Client(estate, "snsq2nats-bridge") as bridge:
        ctx = BridgeContext(plan=estate.plan, nc=bridge.nc, sqs=None, sns=None)  # type: ignore[arg-type]
        fleet = Fleet(bridge.nc, routes, lease_ttl=3.0)
        run = asyncio.create_task(
            run_bridge(
                ctx,
                routes,
                {kind: runner for kind in {r.kind for r in routes}},
                handle_signals=False,
                coordinator=fleet,
            )
        )
        try:
            await until(lambda: held == {r.name for r in routes}, what="every route held")
            assert set(fleet.owned) == held
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(run, 30)
        assert fleet.owned == {}
        assert not bridge.errors, bridge.errors
        await bridge.publish_refused("$JS.API.STREAM.DELETE.KV_snsq2nats_fleet", b"{}")
        await bridge.publish_refused("$KV.someone_elses.key", b"x")


async def test_bridge_reads_and_follows_the_applied_revision_unrefused(estate: Estate) -> None:
    """apply (the admin) recorded the applied revision; the bridge identity reads it, watches
    it and the cutover state (`bridge.follow`), and may not write it."""
    from snsq2nats.bridge.follow import CutoverFollower, read_applied
    from snsq2nats.plan.revision import digest_of

    async with Client(estate, "snsq2nats-bridge") as bridge:
        applied = await read_applied(bridge.nc)
        assert applied is not None and digest_of(applied.plan) == digest_of(estate.plan)
        follower = CutoverFollower(bridge.nc, estate.plan, lambda routes: routes)
        try:
            assert await follower.start()
            assert follower.plan_revision == applied.revision
        finally:
            await follower.close()
        assert not bridge.errors, bridge.errors
        await bridge.publish_refused("$KV.snsq2nats_revision.applied", b"{}")


async def test_the_sns_relay_records_what_sns_took_and_the_admin_reads_it(estate: Estate) -> None:
    """The bridge identity writes the SNS relay's ledger record of a message it pulled from
    the relay's durable (the relay's own code), and no other topic's; the admin (apply's and
    cutover's handover) reads it back."""
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.fanout_handover import read_sent
    from snsq2nats.bridge.nats_to_aws import Item, Relay
    from snsq2nats.bridge.nats_to_sns import SnsTarget
    from snsq2nats.plan.routes import TO_SNS_CONSUMER

    route = next(r for r in estate.plan.candidate_routes if r.kind == "nats-to-sns")
    assert route.stream == "sns_orders"
    async with Client(estate, "sns_orders-publisher") as publisher:
        await publisher.send("sns.orders.order_placed.eu", b"{}", "sns_orders")
    async with Client(estate, "snsq2nats-bridge") as bridge:
        msg = await bridge.pull_one(TO_SNS_CONSUMER, "sns_orders")
        ctx = BridgeContext(plan=estate.plan, nc=bridge.nc, sqs=None, sns=None)  # type: ignore[arg-type]
        relay = Relay(ctx, route, SnsTarget(ctx, route))
        try:
            await relay._record([Item(msg, {}, 0, 0.0)])
        finally:
            await relay.replies.close()
        await msg.ack_sync()
        assert not relay.ledger_warned
        assert not bridge.errors, bridge.errors
        await bridge.publish_refused("snsq2nats.sent.sqs_orders-billing", b"[1]")
    async with Client(estate, "snsq2nats-admin") as admin:
        sent = await read_sent(admin.nc, "sns_orders", None)
        assert sent is not None and msg.metadata.sequence.stream in sent
        assert not admin.errors, admin.errors


@pytest.fixture(params=[False, True], ids=["classic-acks", "v2-acks"])
def ack_server(request: pytest.FixtureRequest, estate: Estate) -> Iterator[tuple[Estate, bool]]:
    """A server of its own with the module's identities (hashing their passwords again would
    cost seconds, and proves nothing more): the ack format is a server setting."""
    assert estate.written is not None
    server = NatsServer(
        name="acks",
        users=estate.written.users,
        extra_config={"feature_flags": {"js_ack_fc_v2": request.param}},
    )
    server.start()
    try:
        acks = Estate(server, estate.plan, estate.written, estate.by_name)
        asyncio.run(apply_as_admin(acks))
        yield acks, request.param
    finally:
        server.stop()


async def test_acks_work_in_both_ack_subject_formats(ack_server: tuple[Estate, bool]) -> None:
    estate, v2 = ack_server
    async with Client(estate, "sqs_orders-dlq-producer") as producer:
        await producer.nc.jetstream().publish("sqs.orders-dlq", b"dead")
    async with Client(estate, "sqs_orders-dlq-consumer") as consumer:
        msg = await consumer.pull_one("orders-dlq", "sqs_orders-dlq")
        js = consumer.nc.jetstream()
        assert msg.reply.startswith("$JS.ACK._." if v2 else "$JS.ACK.sqs_orders-dlq.")
        await msg.ack_sync()
        info = await js.consumer_info("sqs_orders-dlq", "orders-dlq")
        assert info.num_ack_pending == 0
        assert not consumer.errors


async def test_a_literal_ack_subject_denies_every_ack(tmp_path: Path) -> None:
    """The seed's bug: `$JS.ACK.<stream>` matches no real ack subject, so the ack is refused
    and the message stays unacknowledged (and would come back after ack_wait)."""
    plan = shop_plan(probe_version())
    generated = identities(plan)
    broken = [
        replace(
            i,
            publish=(
                *(s for s in i.publish if not s.startswith("$JS.ACK")),
                "$JS.ACK.sqs_orders-dlq",
            ),
        )
        if i.name == "sqs_orders-dlq-consumer"
        else i
        for i in generated
    ]
    written = write_auth(broken, tmp_path / "auth")
    server = NatsServer(name="seedbug", users=written.users)
    server.start()
    try:
        estate = Estate(server, plan, written, {i.name: i for i in broken})
        await apply_as_admin(estate)
        async with Client(estate, "sqs_orders-dlq-producer") as producer:
            await producer.nc.jetstream().publish("sqs.orders-dlq", b"dead")
        async with Client(estate, "sqs_orders-dlq-consumer") as consumer:
            msg = await consumer.pull_one("orders-dlq", "sqs_orders-dlq")
            js = consumer.nc.jetstream()
            await msg.ack()
            await consumer.refused("publish", "$js.ack.sqs_orders-dlq")
            info = await js.consumer_info("sqs_orders-dlq", "orders-dlq")
            assert info.num_ack_pending == 1
    finally:
        server.stop()


async def test_certificate_mapped_users_over_mutual_tls(tmp_path: Path) -> None:
    """--credentials tls: users are the certificates' email identities (verify_and_map), as in
    a secure cluster; each application's certificate gets exactly its identity's grants."""
    import ssl

    import trustme

    from snsq2nats.demo.nats_server import TlsConfig

    plan = shop_plan(probe_version())
    generated = identities(plan)
    written = write_auth(
        generated,
        tmp_path / "auth",
        mode="tls",
        tls_names={i.name: f"{i.name}@shop.test" for i in generated},
    )
    assert not written.secrets  # nothing secret to generate: the certificates are the identity
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    tls = TlsConfig(
        cert_file=tmp_path / "server.pem",
        key_file=tmp_path / "server.key",
        ca_file=ca_file,
        verify=True,
        verify_and_map=True,
    )

    def context_for(name: str) -> ssl.SSLContext:
        cert = ca.issue_cert(f"{name}@shop.test")
        ctx = ssl.create_default_context(cafile=str(ca_file))
        cert.configure_cert(ctx)
        return ctx

    with NatsServer(name="mtls", tls=tls, users=written.users) as server:
        by_name = {i.name: i for i in generated}
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        async def connect(name: str) -> Any:
            return await nats.connect(
                server.url,
                tls=context_for(name),
                inbox_prefix=by_name[name].inbox_prefix,
                error_cb=on_error,
                allow_reconnect=False,
            )

        admin = await connect("snsq2nats-admin")
        try:
            result = await apply_plan(admin, plan, allow_destructive=False)
            assert result.ok
        finally:
            await admin.close()
        producer = await connect("sqs_orders-billing-producer")
        try:
            ack = await producer.jetstream().publish("sqs.orders-billing", b"paid")
            assert ack.stream == "sqs_orders-billing"
            await producer.publish("sqs.orders-fraud", b"no")
            await until(
                lambda: any("publish to" in e and "sqs.orders-fraud" in e for e in errors),
                what="the producer refused on another queue",
            )
        finally:
            await producer.close()


@pytest.mark.slow
def test_cli_writes_identities_without_printing_secrets(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from snsq2nats.cli import main

    out = tmp_path / "auth"
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(shop_plan("2.12.0")))
    run = CliRunner().invoke(main, ["auth", "--plan", str(plan_path), "-o", str(out)])
    assert run.exit_code == 0, run.output
    secrets = {p.read_text().strip() for p in (out / "secrets").iterdir()}
    assert secrets and not any(s in run.output for s in secrets)
    listed = CliRunner().invoke(main, ["auth", "--plan", str(plan_path), "-o", str(out), "--json"])
    names = [i["name"] for i in json.loads(listed.stdout)["identities"]]
    assert "snsq2nats-admin" in names and "sqs_orders-billing-consumer" in names
    # A second run keeps every application's secret: only permissions are regenerated.
    assert {p.read_text().strip() for p in (out / "secrets").iterdir()} == secrets
    assert not any(s in listed.output for s in secrets)
    # The gateway's access keys, one per identity: never printed either.
    keys = json.loads((out / "gateway-keys.json").read_text())["keys"]
    assert sorted(k["identity"] for k in keys) == sorted(names)
    assert not any(k["secret_access_key"] in run.output + listed.output for k in keys)


async def test_operator_mode_user_jwts_carry_the_same_permissions(tmp_path: Path) -> None:
    """--format jwt: the server trusts the generated operator (MEMORY resolver); every identity
    connects with its creds file and has exactly its grants."""
    plan = shop_plan(probe_version())
    generated = identities(plan)
    written = write_jwt(generated, tmp_path / "jwt")
    for path in written.creds.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with NatsServer(name="jwt", extra_config=written.settings) as server:
        estate = Estate(server, plan, None, {i.name: i for i in generated}, creds=written.creds)
        await apply_as_admin(estate)
        async with Client(estate, "sqs_orders-billing-producer") as producer:
            await producer.send("sqs.orders-billing", b"order", "sqs_orders-billing")
            await producer.publish_refused("sqs.orders-fraud", b"no")
        async with Client(estate, "sqs_orders-billing-consumer") as consumer:
            msg = await consumer.pull_one("orders-billing", "sqs_orders-billing")
            js = consumer.nc.jetstream()
            await msg.ack_sync()
            assert (
                await js.consumer_info("sqs_orders-billing", "orders-billing")
            ).num_ack_pending == 0
            await consumer.subscribe_refused("_INBOX_sqs_orders-billing-producer.>")
    # A re-run keeps every seed (applications keep their credentials).
    again = write_jwt(generated, tmp_path / "jwt")
    assert again.settings["system_account"] == written.settings["system_account"]
    assert [p.read_text().split("SEED-----")[1] for p in again.creds.values()] == [
        p.read_text().split("SEED-----")[1] for p in written.creds.values()
    ]


NSC_FLAGS = json.loads((DATA / "auth" / "nsc_flags.json").read_text())


def test_nsc_script_uses_only_nsc_flags() -> None:
    """nsc is not installable here: every command and flag the script uses must be one nsc
    documents (tests/data/auth/nsc_flags.json), and every identity must get its grants."""
    import shlex

    plan = shop_plan(probe_version())
    generated = identities(plan)
    script = nsc_script(generated)
    users = {}
    for line in script.splitlines():
        if not line.startswith("nsc "):
            continue
        words = shlex.split(line)
        command = " ".join(words[1:3])
        assert command in NSC_FLAGS, command
        flags = [w.split("=")[0] for w in words[3:] if w.startswith("--")]
        assert set(flags) <= set(NSC_FLAGS[command]), (command, flags)
        if command == "add user":
            values = dict(zip(words[3::2], words[4::2], strict=False))
            users[values["--name"]] = (values["--allow-pub"].split(","), values["--allow-sub"])
    assert set(users) == {i.name for i in generated}
    for identity in generated:
        assert users[identity.name][0] == list(identity.publish)


def test_cli_jwt_and_nsc_formats(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from snsq2nats.cli import main

    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(shop_plan("2.12.0")))
    jwt = CliRunner().invoke(
        main, ["auth", "--plan", str(plan_path), "--format", "jwt", "-o", str(tmp_path / "j")]
    )
    assert jwt.exit_code == 0, jwt.output
    ctx = json.loads((tmp_path / "j" / "contexts" / "snsq2nats-bridge.json").read_text())
    assert Path(ctx["creds"]).read_text().startswith("-----BEGIN NATS USER JWT-----")
    assert ctx["inbox_prefix"] == "_INBOX_snsq2nats-bridge"
    assert "SU" not in jwt.output  # no user seed printed
    nsc = CliRunner().invoke(
        main, ["auth", "--plan", str(plan_path), "--format", "nsc", "-o", str(tmp_path / "n")]
    )
    assert nsc.exit_code == 0, nsc.output
    assert "nsc add user" in (tmp_path / "n" / "nsc.sh").read_text()


def test_write_identities_writes_each_format_with_its_record_and_modes(tmp_path: Path) -> None:
    from snsq2nats.auth.output import write_identities
    from snsq2nats.auth.record import load_record

    generated = identities(shop_plan("2.12.0"))
    for fmt, main_name, mode in (
        ("config", "snsq2nats-auth.conf", 0o600),
        ("jwt", "snsq2nats-jwt.conf", 0o600),
        ("nsc", "nsc.sh", 0o700),
    ):
        directory = tmp_path / fmt
        written = write_identities(
            generated, directory, fmt=fmt, credentials="tls", tls_user="{name}", url="nats://a"
        )
        assert written.main == directory / main_name
        assert stat.S_IMODE(written.main.stat().st_mode) == mode
        assert stat.S_IMODE(written.record.stat().st_mode) == 0o600
        assert stat.S_IMODE(written.keys.stat().st_mode) == 0o600
        record = load_record(directory)
        assert record is not None and record.path == written.record
    # The record names the options that shaped the grants: a later check regenerates with them.
    options = json.loads((tmp_path / "config" / "grants.json").read_text())["options"]
    assert options == ["--credentials", "tls", "--tls-user", "{name}", "--url", "nats://a"]
    assert json.loads((tmp_path / "nsc" / "grants.json").read_text())["options"] == [
        "--format",
        "nsc",
    ]


def test_context_url_keeps_every_url_and_refuses_none() -> None:
    from snsq2nats.auth.output import context_url
    from snsq2nats.errors import UsageError

    assert (
        context_url(" nats://a:4222, ,nats://b:4222 ", "nats://d") == "nats://a:4222,nats://b:4222"
    )
    assert context_url(None, "nats://d") == "nats://d"
    with pytest.raises(UsageError, match="--server is empty"):
        context_url(" , ", "nats://d")


def test_commands_run_under_the_generated_contexts(estate: Estate, tmp_path: Path) -> None:
    """plan and apply with the admin's natscli context (its inbox prefix included) see the
    applied estate; an identity without the grants a command needs gets one line naming the
    identity and the refused subject, at once, not a timeout."""
    from click.testing import CliRunner

    from snsq2nats.cli import main

    assert estate.written is not None
    admin = estate.written.contexts["snsq2nats-admin"]
    plan_args = ["plan", "--inventory", str(SHOP), "--mapping", str(SHOP_CUTOVER)]
    clean = CliRunner().invoke(main, [*plan_args, "--context", str(admin), "--detailed-exitcode"])
    assert clean.exit_code == 0, clean.output
    path = tmp_path / "plan.json"
    path.write_bytes(document_json(estate.plan))
    applied = CliRunner().invoke(
        main, ["apply", str(path), "--context", str(admin), "--auto-approve"]
    )
    assert applied.exit_code == 0, applied.output
    producer = estate.written.contexts["sqs_orders-billing-producer"]
    refused = CliRunner().invoke(main, [*plan_args, "--context", str(producer)])
    assert refused.exit_code == 1
    assert (
        "permission denied: user sqs_orders-billing-producer may not publish to" in refused.output
    )
    assert "$JS.API.STREAM." in refused.output and "snsq2nats auth" in refused.output
    assert estate.password("sqs_orders-billing-producer") not in refused.output


async def test_identities_named_after_the_policys_principals(tmp_path: Path) -> None:
    """A queue policy naming roles yields one identity per role with exactly those roles: the
    sender may send and nothing else; a role allowed ReceiveMessage but not DeleteMessage may
    pull, and its ack is refused (the message stays, as in SQS without DeleteMessage)."""
    import yaml

    from tests.test_mapping import case_inventory

    case = yaml.safe_load((DATA / "mapping" / "policy.yaml").read_text())
    inventory = case_inventory(case["inventory"])
    statements = inventory.queues[0].policy["Statement"]  # type: ignore[index]
    statements.append(
        {
            "Sid": "auditor",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:role/auditor"},
            "Action": "sqs:ReceiveMessage",
            "Resource": "*",
        }
    )
    plan = assemble_plan(
        inventory, load_rules([]), None, server=ServerInfo(reachable=False, version=probe_version())
    )
    generated = identities(plan)
    by_name = {i.name: i for i in generated}
    assert {"aws-role-checkout", "aws-role-billing", "aws-role-auditor"} <= set(by_name)
    assert by_name["aws-role-checkout"].publish == ("sqs.guarded",)
    written = write_auth(generated, tmp_path / "auth")
    with NatsServer(name="principals", users=written.users) as server:
        estate = Estate(server, plan, written, by_name)
        await apply_as_admin(estate)
        async with Client(estate, "aws-role-checkout") as checkout:
            await checkout.send("sqs.guarded", b"order", "sqs_guarded")
            await checkout.publish_refused("$JS.API.CONSUMER.MSG.NEXT.sqs_guarded.guarded", b"1")
        async with Client(estate, "aws-role-auditor") as auditor:
            msg = await auditor.pull_one("guarded", "sqs_guarded")
            await msg.ack()
            await auditor.refused("publish", "$js.ack.sqs_guarded.guarded")
        async with Client(estate, "aws-role-billing") as billing:
            js = billing.nc.jetstream()
            info = await js.consumer_info("sqs_guarded", "guarded")
            assert info.num_ack_pending == 1  # the auditor's fetch was never acknowledged
            await billing.publish_refused("sqs.guarded", b"not a sender")


@pytest.mark.slow
async def test_secure_three_node_cluster_with_certificate_mapped_users(tmp_path: Path) -> None:
    """The seed's topology: three nodes, mutual TLS for clients and routes, users mapped from
    client certificates, every stream and consumer with three replicas. Acks really empty the
    work queue; a neighbour's subject is refused."""
    import ssl

    import trustme

    from snsq2nats.demo.nats_server import NatsCluster, TlsConfig

    plan = assemble_plan(
        load_inventory(SHOP),
        load_rules([SHOP_CUTOVER], replicas=3),
        None,
        server=ServerInfo(reachable=False, version=probe_version()),
    )
    assert {s.num_replicas for s in plan.streams} == {3}
    generated = identities(plan)
    emails = {i.name: f"{i.name}@shop.test" for i in generated}
    written = write_auth(generated, tmp_path / "auth", mode="tls", tls_names=emails)
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    node = ca.issue_cert("127.0.0.1", "localhost")
    node.cert_chain_pems[0].write_to_path(str(tmp_path / "node.pem"))
    node.private_key_pem.write_to_path(str(tmp_path / "node.key"))
    tls = TlsConfig(tmp_path / "node.pem", tmp_path / "node.key", ca_file, verify_and_map=True)
    routes = TlsConfig(tmp_path / "node.pem", tmp_path / "node.key", ca_file)
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    async def connect(cluster: NatsCluster, name: str) -> Any:
        context = ssl.create_default_context(cafile=str(ca_file))
        ca.issue_cert(emails[name]).configure_cert(context)
        return await nats.connect(
            cluster.urls,
            tls=context,
            inbox_prefix=f"_INBOX_{name}",
            error_cb=on_error,
            allow_reconnect=False,
        )

    with NatsCluster(3, name="secure", tls=tls, route_tls=routes, users=written.users) as cluster:
        admin = await connect(cluster, "snsq2nats-admin")
        result = await apply_plan(admin, plan, allow_destructive=False)
        assert result.ok, [o.detail for o in result.failed]
        producer = await connect(cluster, "sqs_orders-billing-producer")
        consumer = await connect(cluster, "sqs_orders-billing-consumer")
        try:
            js = producer.jetstream()
            for n in range(5):
                # Retried through the new R3 stream's leader election (and until its subjects'
                # interest reaches this server: "no responders" until then); the message id
                # makes a retry after a lost PubAck a duplicate the stream drops.
                ack = await retrying(
                    lambda n=n: js.publish(
                        "sqs.orders-billing",
                        f"order-{n}".encode(),
                        headers={"Nats-Msg-Id": f"o{n}"},
                    ),
                    retry_on=(
                        nats.errors.TimeoutError,
                        nats.js.errors.ServiceUnavailableError,
                        nats.js.errors.NoStreamResponseError,
                    ),
                    what="a publish to the new R3 stream",
                )
                assert ack.stream == "sqs_orders-billing"
            cjs = consumer.jetstream()
            sub = await cjs.pull_subscribe_bind("orders-billing", "sqs_orders-billing")
            got = 0
            while got < 5:
                for msg in await sub.fetch(5 - got, timeout=10):
                    await msg.ack_sync()
                    got += 1
            # The consumer may not read stream info (not its grant): the admin checks.
            ajs = admin.jetstream()
            info = await ajs.stream_info("sqs_orders-billing")
            assert info.config.num_replicas == 3
            await until(
                lambda: _messages(ajs, "sqs_orders-billing", 0), what="the work queue emptied"
            )
            await producer.publish("sqs.orders-fraud", b"no")
            await until(
                lambda: any("publish to" in e and "sqs.orders-fraud" in e for e in errors),
                what="the producer refused on another queue",
            )
        finally:
            await producer.close()
            await consumer.close()
            await admin.close()


async def _messages(js: Any, stream: str, expected: int) -> bool:
    return bool((await js.stream_info(stream)).state.messages == expected)


@pytest.mark.parametrize("fmt", ["config", "jwt"])
def test_contexts_carry_the_server_urls_the_user_gave(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every context names the cluster the user gave (NATS_URL, -s or --url, all of its URLs),
    not a default local server; file paths in it are absolute, so the context works wherever
    natscli or snsq2nats reads it from (here: `-o` relative, read from another directory)."""
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from snsq2nats.jetstream.connect import NatsOptions

    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(shop_plan("2.12.0")))
    cluster = "nats://n1.shop.test:4222,nats://n2.shop.test:4222,nats://n3.shop.test:4222"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    base = ["auth", "--plan", str(plan_path), "--format", fmt]
    if fmt == "config":
        base += ["--credentials", "nkey"]  # (another format refuses it: it has its own)
    cases = {
        "env": ([*base, "-o", "by-env"], {"NATS_URL": cluster.replace(",", ", ")}),
        "flag": ([*base, "-o", "by-flag", "-s", cluster], {"NATS_URL": "nats://other:4222"}),
        "url": ([*base, "-o", "by-url", "--url", cluster], {}),
    }
    for name, (args, env) in cases.items():
        run = CliRunner(env={"NATS_URL": None, **env}).invoke(main, args)
        assert run.exit_code == 0, (name, run.output)
    monkeypatch.chdir(tmp_path)
    for out in ("by-env", "by-flag", "by-url"):
        for identity in ("snsq2nats-bridge", "sqs_orders-billing-consumer"):
            path = work / out / "contexts" / f"{identity}.json"
            ctx = json.loads(path.read_text())
            assert ctx["url"] == cluster, (out, identity)
            options = NatsOptions.resolve(context=str(path), env={})
            assert options.servers == cluster.split(",")
            secret = options.creds if fmt == "jwt" else options.nkey
            assert secret is not None and Path(secret).is_absolute() and Path(secret).is_file()
    default = CliRunner(env={"NATS_URL": None}).invoke(main, [*base, "-o", str(tmp_path / "d")])
    assert default.exit_code == 0, default.output
    ctx = json.loads((tmp_path / "d" / "contexts" / "snsq2nats-admin.json").read_text())
    assert ctx["url"] == "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    ("fmt", "credentials", "tls_user", "refused"),
    [
        ("jwt", "nkey", None, "--credentials only applies to --format config, not --format jwt"),
        ("nsc", None, "{name}@x", "--tls-user only applies to --format config, not --format nsc"),
        ("jwt", "tls", "{name}", "--credentials and --tls-user only apply to --format config"),
        ("config", "password", "{name}@x", "--tls-user only applies with --credentials tls"),
        ("config", None, "{name}@x", "--tls-user only applies with --credentials tls"),
    ],
)
def test_an_option_the_format_ignores_is_refused(
    fmt: str, credentials: str | None, tls_user: str | None, refused: str
) -> None:
    from snsq2nats.auth.options import check_options
    from snsq2nats.errors import UsageError

    with pytest.raises(UsageError) as caught:
        check_options(fmt, credentials, tls_user)
    assert refused in caught.value.what and caught.value.hint


@pytest.mark.parametrize(
    ("fmt", "credentials", "tls_user"),
    [
        ("jwt", None, None),
        ("nsc", None, None),
        ("config", "nkey", None),
        ("config", "tls", "{name}"),
    ],
)
def test_the_options_a_format_reads_pass(
    fmt: str, credentials: str | None, tls_user: str | None
) -> None:
    from snsq2nats.auth.options import check_options

    check_options(fmt, credentials, tls_user)
