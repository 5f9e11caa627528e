"""The gateway's access keys: `auth` writes one key pair per identity in every format (0600,
never printed), keeps them across re-plans, and `gateway.keys` loads them for SigV4 and for
connecting to NATS as the identity."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from snsq2nats.auth.identities import identities
from snsq2nats.auth.output import write_identities
from snsq2nats.errors import SnsqError
from snsq2nats.files import document_json
from snsq2nats.gateway.keys import KEYS_FILE, GatewayKeys, load_keys
from snsq2nats.gateway.sigv4 import SigV4Authenticator
from snsq2nats.plan.model import Plan
from tests.test_auth import shop_plan

URL = "nats://127.0.0.1:4222"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return shop_plan("2.12.0")


def _write(plan: Plan, directory: Path, fmt: str = "config", credentials: str = "nkey") -> Path:
    written = write_identities(
        identities(plan),
        directory,
        fmt=fmt,  # type: ignore[arg-type]
        credentials=credentials,  # type: ignore[arg-type]
        tls_user="{name}@example.com",
        url=URL,
    )
    assert written.keys == directory / KEYS_FILE
    return written.keys


def _by_identity(keys: GatewayKeys) -> dict[str, tuple[str, str]]:
    return {k.identity: (k.access_key_id, k.secret) for k in keys.values()}


@pytest.mark.parametrize(
    ("fmt", "credentials", "kind"),
    [
        ("config", "password", "password"),
        ("config", "nkey", "nkey"),
        ("config", "tls", "tls"),
        ("jwt", "password", "creds"),
        ("nsc", "password", "creds"),
    ],
)
def test_every_format_writes_a_private_key_per_identity(
    plan: Plan, tmp_path: Path, fmt: str, credentials: str, kind: str
) -> None:
    path = _write(plan, tmp_path, fmt, credentials)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = load_keys(tmp_path)  # the directory names the file
    names = [i.name for i in identities(plan)]
    assert sorted(k.identity for k in keys.values()) == sorted(names)
    assert len({k.secret for k in keys.values()}) == len(names)
    assert keys.url == URL
    for access_key_id, key in keys.items():
        assert access_key_id == key.access_key_id
        assert len(access_key_id) == 20 and access_key_id.isalnum() and access_key_id.isupper()
        assert len(key.secret) == 40
        assert key.secret not in repr(key) and key.secret not in repr(keys)
        assert key.inbox_prefix == f"_INBOX_{key.identity}"
        nats = key.nats
        assert nats.kind == kind
        if kind == "password":
            assert nats.user == key.identity and nats.password_file
            assert Path(nats.password_file).is_absolute() and Path(nats.password_file).is_file()
            # The key file names the NATS password's file; it never holds the password.
            assert Path(nats.password_file).read_text().strip() not in path.read_text()
        elif kind == "nkey":
            assert nats.nkey and Path(nats.nkey).read_text().startswith("SU")
        elif kind == "tls":
            assert nats.user == f"{key.identity}@example.com"
            assert nats.context and Path(nats.context).is_file()
        elif fmt == "jwt":
            assert nats.creds and Path(nats.creds).read_text().startswith("-----BEGIN NATS")
        else:  # nsc keeps the seeds: the creds file is where the operator exports it
            assert nats.creds == str(tmp_path.absolute() / "creds" / f"{key.identity}.creds")


def test_keys_verify_requests_as_their_identity(plan: Plan, tmp_path: Path) -> None:
    keys = load_keys(_write(plan, tmp_path))
    key = next(k for k in keys.values() if k.identity == "sqs_orders-billing-producer")
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:4566/",
        data=b"Action=ListQueues",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(Credentials(key.access_key_id, key.secret), "sqs", "us-east-1").add_auth(request)
    prepared = request.prepare()
    headers = {"Host": "127.0.0.1:4566", **dict(prepared.headers)}
    principal = SigV4Authenticator(keys).authenticate("POST", "/", "", headers, prepared.body)
    assert principal.identity == "sqs_orders-billing-producer"
    assert principal.access_key_id == key.access_key_id


def test_regenerating_keeps_keys_of_identities_that_remain(plan: Plan, tmp_path: Path) -> None:
    first = _by_identity(load_keys(_write(plan, tmp_path)))
    assert _by_identity(load_keys(_write(plan, tmp_path))) == first
    # A re-plan without the fraud queue: its identities' keys go, every other key stays.
    smaller = plan.model_copy(
        update={"resources": [r for r in plan.resources if r.name != "orders-fraud"]}
    )
    second = _by_identity(load_keys(_write(smaller, tmp_path)))
    gone = set(first) - set(second)
    assert gone == {"sqs_orders-fraud-producer", "sqs_orders-fraud-consumer"}
    assert second == {name: first[name] for name in second}
    # Back again: the fraud queue's identities get new keys, the others keep theirs.
    third = _by_identity(load_keys(_write(plan, tmp_path)))
    assert all(third[name] != first[name] for name in gone)
    assert all(third[name] == first[name] for name in second)
    # Another format keeps the keys and changes only how the gateway connects to NATS.
    jwt = load_keys(_write(plan, tmp_path, "jwt"))
    assert _by_identity(jwt) == third
    assert {k.nats.kind for k in jwt.values()} == {"creds"}


def test_a_damaged_key_file_is_refused_without_quoting_it(plan: Plan, tmp_path: Path) -> None:
    path = _write(plan, tmp_path)
    secret = next(iter(load_keys(path).values())).secret
    path.write_text(path.read_text().replace('"keys"', '"kees"'))
    with pytest.raises(SnsqError) as caught:
        load_keys(path)
    assert str(path) in caught.value.one_line() and secret not in caught.value.one_line()
    # auth does not silently issue every application new keys over a file it cannot read.
    with pytest.raises(SnsqError):
        _write(plan, tmp_path)
    assert '"kees"' in path.read_text()
    with pytest.raises(SnsqError) as missing:
        load_keys(tmp_path / "elsewhere")
    assert "snsq2nats auth" in (missing.value.hint or "")


def test_cli_writes_keys_and_never_prints_them(plan: Plan, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from snsq2nats.cli import main

    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(plan))
    out = tmp_path / "auth"
    args = ["auth", "--plan", str(plan_path), "-o", str(out), "--format", "jwt"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    keys = load_keys(out)
    shown = " ".join(run.output.split())  # the console wraps long lines
    assert f"gateway access keys (0600, one per identity) in {out / KEYS_FILE}" in shown
    listed = CliRunner().invoke(main, [*args, "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["identities"]
    for key in keys.values():
        assert key.secret not in run.output and key.secret not in listed.output
    # The --json run regenerated the files: the same keys.
    assert _by_identity(load_keys(out)) == _by_identity(keys)


# -- one NATS connection per identity, on a real server with auth's generated config ----------


@pytest.mark.parametrize("fmt", ["config", "jwt"])
async def test_connections_act_as_the_keys_identity(tmp_path: Path, fmt: str) -> None:
    from snsq2nats.apply import apply_plan
    from snsq2nats.auth.config import write_auth
    from snsq2nats.auth.jwt import write_jwt
    from snsq2nats.demo.nats_server import NatsServer
    from snsq2nats.errors import GatewayError, PermissionDeniedError
    from snsq2nats.gateway.connections import IdentityConnections, publish
    from tests.test_auth import probe_version

    plan = shop_plan(probe_version())
    generated = identities(plan)
    directory = tmp_path / "auth"
    server = NatsServer(name=f"gw-{fmt}")
    _write_for(plan, directory, fmt, server.url)
    # The server config for the same secrets (a re-run reuses every seed).
    if fmt == "jwt":
        server.extra_config = write_jwt(generated, directory).settings
    else:
        server.users = write_auth(generated, directory, mode="nkey", url=server.url).users
    keys = load_keys(directory)
    with server:
        async with IdentityConnections(keys) as conns:  # the URL auth was given
            admin = await conns.connection("snsq2nats-admin")
            result = await apply_plan(admin, plan, allow_destructive=False)
            assert result.ok, [o.detail for o in result.failed]
            producer = await conns.connection("sqs_orders-billing-producer")
            assert await conns.connection("sqs_orders-billing-producer") is producer  # reused
            ack = await publish(producer, "sqs.orders-billing", b"order-1")
            assert ack.stream == "sqs_orders-billing"
            # NATS enforces the identity's grants through the gateway: another queue is refused.
            with pytest.raises(PermissionDeniedError) as caught:
                await publish(producer, "sqs.orders-fraud", b"not mine")
            assert "sqs.orders-fraud" in caught.value.one_line()
            js = await conns.jetstream("sqs_orders-billing-consumer")
            assert await conns.jetstream("sqs_orders-billing-consumer") is js
            sub = await js.pull_subscribe_bind("orders-billing", "sqs_orders-billing")
            (msg,) = await sub.fetch(1, timeout=10)
            assert msg.data == b"order-1"
            await msg.ack_sync()
            assert conns.identities == [
                "snsq2nats-admin",
                "sqs_orders-billing-consumer",
                "sqs_orders-billing-producer",
            ]
            with pytest.raises(GatewayError) as unknown:
                await conns.connection("nobody")
            assert unknown.value.status == 503 and not unknown.value.sender
        assert producer.is_closed and admin.is_closed
        with pytest.raises(GatewayError):
            await conns.connection("snsq2nats-admin")  # stopped: no new connections


def _write_for(plan: Plan, directory: Path, fmt: str, url: str) -> None:
    write_identities(
        identities(plan),
        directory,
        fmt=fmt,  # type: ignore[arg-type]
        credentials="nkey",
        tls_user="{name}",
        url=url,
    )


def test_identity_options_take_the_identitys_credential_only(plan: Plan, tmp_path: Path) -> None:
    from snsq2nats.errors import UsageError
    from snsq2nats.gateway.connections import identity_options
    from snsq2nats.jetstream.connect import NatsOptions

    base = NatsOptions(servers=["tls://a:4222"], user="gateway", password="pw", ca="/ca.pem")
    keys = load_keys(_write(plan, tmp_path / "pw", credentials="password"))
    key = next(k for k in keys.values() if k.identity == "sqs_orders-billing-producer")
    options = identity_options(key, base)
    assert options.user == "sqs_orders-billing-producer"
    assert options.password == Path(key.nats.password_file or "").read_text().strip()
    assert options.inbox_prefix == "_INBOX_sqs_orders-billing-producer"
    assert options.servers == ["tls://a:4222"] and options.ca == "/ca.pem"
    assert options.password not in repr(options)
    # nsc: the creds file is the operator's to export; until then the gateway says so.
    nsc = load_keys(_write(plan, tmp_path / "nsc", fmt="nsc"))
    with pytest.raises(UsageError) as caught:
        identity_options(next(iter(nsc.values())), base)
    assert "nsc generate creds" in (caught.value.hint or "")
    # Certificate-mapped users present the certificate their context names; auth writes none.
    tls = load_keys(_write(plan, tmp_path / "tls", credentials="tls"))
    tls_key = next(iter(tls.values()))
    with pytest.raises(UsageError) as caught:
        identity_options(tls_key, base)
    assert "client certificate" in caught.value.what
    context = Path(tls_key.nats.context or "")
    body = json.loads(context.read_text())
    context.write_text(json.dumps({**body, "cert": "/c.pem", "key": "/k.pem"}))
    options = identity_options(tls_key, base)
    assert (options.cert, options.key, options.user) == ("/c.pem", "/k.pem", None)
