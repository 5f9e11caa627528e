"""`snsq2nats` against a NATS server in operator (JWT) mode, authenticating with a creds file.

The operator, accounts and user are generated per test (tests/fixtures/jwt_auth.py) and the
server resolves accounts from JWTs preloaded into its config (MEMORY resolver), so this is
the decentralised auth an nsc-managed deployment uses, without needing nsc.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from snsq2nats.cli import main
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.errors import NatsConnectError
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.state import stream_names
from tests.fixtures.jwt_auth import JwtAuth, jwt_server

SHOP = Path(__file__).parent / "data" / "mapping" / "shop_inventory.json"


@pytest.fixture
def auth() -> JwtAuth:
    return JwtAuth.generate()


@pytest.fixture
def jwt_nats(auth: JwtAuth) -> Iterator[NatsServer]:
    server = jwt_server(auth, name="jwt")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def creds(auth: JwtAuth, tmp_path: Path) -> Path:
    return auth.write_creds(tmp_path / "user.creds")


def cli(*args: str | Path, env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def base_env(tmp_path: Path) -> dict[str, str]:
    # No natscli context or stray NATS_* variables from the machine running the tests.
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "NATS_CONTEXT": ""}
    for var in ("NATS_URL", "NATS_CREDS", "NATS_NKEY", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN"):
        env.setdefault(var, "")
    return env


def assert_no_secrets(text: str, auth: JwtAuth, creds: Path) -> None:
    for secret in auth.secrets():
        assert secret not in text
    for line in creds.read_text(encoding="utf-8").splitlines():
        # Every line carrying key material (the JWT and the seed).
        if len(line) > 40 and not line.startswith(("-", "*", "NKEY")):
            assert line not in text


def test_creds_file_is_owner_only_and_well_formed(auth: JwtAuth, creds: Path) -> None:
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    text = creds.read_text(encoding="utf-8")
    assert text.startswith("-----BEGIN NATS USER JWT-----\n")
    assert "------END NATS USER JWT------" in text
    assert "-----BEGIN USER NKEY SEED-----" in text
    assert auth.user.seed.startswith("SU")
    assert auth.account.public.startswith("A")
    assert auth.operator.public.startswith("O")
    # The user JWT names the account that issued it and the user it is about.
    payload = auth.user_jwt.split(".")[1]
    claims = json.loads(_b64decode(payload))
    assert claims["iss"] == auth.account.public
    assert claims["sub"] == auth.user.public
    assert claims["nats"]["type"] == "user"


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def test_connect_with_creds_file_and_use_jetstream(jwt_nats: NatsServer, creds: Path) -> None:
    opts = NatsOptions.resolve(server=jwt_nats.url, env={"NATS_CREDS": str(creds)})
    assert opts.creds == str(creds)
    nc = await connect_nats(opts, name="pytest-creds")
    try:
        js = nc.jetstream()
        await js.add_stream(name="CREDS_CHECK", subjects=["creds.check.>"])
        ack = await js.publish("creds.check.one", b"hello")
        assert ack.stream == "CREDS_CHECK"
        info = await js.stream_info("CREDS_CHECK")
        assert info.state.messages == 1
    finally:
        await nc.close()


def test_plan_and_apply_over_a_creds_file(
    jwt_nats: NatsServer, creds: Path, auth: JwtAuth, tmp_path: Path
) -> None:
    env = {**base_env(tmp_path), "NATS_CREDS": str(creds)}
    plan_path = tmp_path / "plan.json"
    outputs: list[str] = []

    planned = cli("plan", "--inventory", SHOP, "-s", jwt_nats.url, "-o", plan_path, env=env)
    outputs += [planned.stdout, planned.stderr]
    assert planned.exit_code == 0, planned.output
    assert plan_path.is_file()
    assert_no_secrets(plan_path.read_text(encoding="utf-8"), auth, creds)

    applied = cli("apply", plan_path, "--auto-approve", "-s", jwt_nats.url, env=env)
    outputs += [applied.stdout, applied.stderr]
    assert applied.exit_code == 0, applied.output

    again = cli("plan", "--inventory", SHOP, "-s", jwt_nats.url, "--detailed-exitcode", env=env)
    outputs += [again.stdout, again.stderr]
    assert again.exit_code == 0, again.output

    # The streams really are in the user's account on the server.
    async def account_streams() -> set[str]:
        nc = await connect_nats(NatsOptions(servers=[jwt_nats.url], creds=str(creds)))
        try:
            return await stream_names(nc)
        finally:
            await nc.close()

    assert asyncio.run(account_streams())
    for text in outputs:
        assert_no_secrets(text, auth, creds)


async def test_connect_without_creds_is_refused(
    jwt_nats: NatsServer, auth: JwtAuth, creds: Path
) -> None:
    opts = NatsOptions.resolve(server=jwt_nats.url, env={})
    with pytest.raises(NatsConnectError) as err:
        await connect_nats(opts, name="pytest-no-creds")
    message = err.value.one_line()
    assert "authorization" in message.lower()
    assert_no_secrets(message, auth, creds)


async def test_creds_from_an_unknown_account_are_refused(
    jwt_nats: NatsServer, auth: JwtAuth, tmp_path: Path
) -> None:
    # A well-formed creds file whose account the server's resolver does not know.
    stranger = JwtAuth.generate()
    stray = stranger.write_creds(tmp_path / "stranger.creds")
    opts = NatsOptions.resolve(server=jwt_nats.url, env={"NATS_CREDS": str(stray)})
    with pytest.raises(NatsConnectError) as err:
        await connect_nats(opts, name="pytest-stranger")
    message = err.value.one_line()
    assert "authorization" in message.lower()
    assert_no_secrets(message, stranger, stray)
    assert_no_secrets(repr(opts), stranger, stray)


def test_cli_apply_without_creds_exits_1_mentioning_authorization(
    jwt_nats: NatsServer, auth: JwtAuth, creds: Path, tmp_path: Path
) -> None:
    env = base_env(tmp_path)
    plan_path = tmp_path / "plan.json"
    offline = cli("plan", "--inventory", SHOP, "--offline", "-o", plan_path, env=env)
    assert offline.exit_code == 0, offline.output

    texts: list[str] = []
    from_file = cli("apply", plan_path, "--auto-approve", "-s", jwt_nats.url, env=env)
    fresh = cli("apply", "--inventory", SHOP, "--auto-approve", "-s", jwt_nats.url, env=env)
    for result in (from_file, fresh):
        assert result.exit_code == 1, result.output
        text = result.stdout + result.stderr
        assert "authorization" in text.lower()
        assert "Traceback" not in text
        texts.append(text)

    # A server that is up and refuses the credentials is an error for `plan` too, never a
    # silent "no server reachable: everything is create".
    planned = cli("plan", "--inventory", SHOP, "-s", jwt_nats.url, env=env)
    assert planned.exit_code == 1, planned.output
    texts.append(planned.stdout + planned.stderr)
    assert "authorization" in texts[-1].lower()
    assert "planned as create" not in texts[-1]

    for text in texts:
        assert_no_secrets(text, auth, creds)
