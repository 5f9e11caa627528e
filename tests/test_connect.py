"""The NATS connection layer against real nats-server processes: no mocks."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.demo.nats_server import LocalNatsError, NatsCluster, NatsServer, free_ports
from snsq2nats.errors import NatsConnectError, UsageError
from snsq2nats.jetstream.connect import DEFAULT_NATS_URL, NatsOptions, connect_nats, redact_url
from tests.fixtures.nats import AuthServer, TlsServer
from tests.fixtures.wait import retrying

BURGER = b"one big burger"


def write_context(config_home: Path, name: str, data: dict[str, Any] | str) -> Path:
    path = config_home / "nats" / "context" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def select_context(config_home: Path, name: str) -> None:
    (config_home / "nats").mkdir(parents=True, exist_ok=True)
    (config_home / "nats" / "context.txt").write_text(name + "\n", encoding="utf-8")


# -- redact_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://alice:s3cret@host:4222", "nats://host:4222"),
        ("tls://tok3n@host:4222", "tls://host:4222"),
        ("alice:s3cret@host:4222", "host:4222"),
        ("nats://alice:p@ss@host", "nats://host"),
        ("  localhost:4222 ", "localhost:4222"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_repr_hides_secrets() -> None:
    opts = NatsOptions(
        servers=["nats://bob:urlpass@h:4222"], user="bob", password="hunter22", token="t0ken99"
    )
    text = repr(opts) + str(opts)
    for secret in ("hunter22", "t0ken99", "urlpass"):
        assert secret not in text
    assert "password=<set>" in text
    assert "nats://h:4222" in text


# -- resolve: natscli conventions ----------------------------------------------------------


def test_resolve_default(tmp_path: Path) -> None:
    opts = NatsOptions.resolve(env={}, config_home=tmp_path)
    assert opts.servers == [DEFAULT_NATS_URL]
    assert opts.context is None


def test_resolve_precedence_flags_env_context(tmp_path: Path) -> None:
    write_context(
        tmp_path,
        "prod",
        {"url": "nats://ctx1:4222,nats://ctx2:4222", "user": "ctxuser", "password": "ctxpw"},
    )
    env = {"NATS_URL": "nats://env1:4222, nats://env2:4222", "NATS_USER": "envuser"}

    from_ctx = NatsOptions.resolve(context="prod", env={}, config_home=tmp_path)
    assert from_ctx.servers == ["nats://ctx1:4222", "nats://ctx2:4222"]
    assert (from_ctx.user, from_ctx.password, from_ctx.context) == ("ctxuser", "ctxpw", "prod")

    from_env = NatsOptions.resolve(context="prod", env=env, config_home=tmp_path)
    assert from_env.servers == ["nats://env1:4222", "nats://env2:4222"]
    assert from_env.user == "envuser"
    # A field the environment does not set still comes from the context.
    assert from_env.password == "ctxpw"

    from_flag = NatsOptions.resolve(
        server="nats://flag:4222", context="prod", env=env, config_home=tmp_path
    )
    assert from_flag.servers == ["nats://flag:4222"]
    assert from_flag.user == "envuser"


def test_resolve_env_credentials(tmp_path: Path) -> None:
    env = {
        "NATS_CREDS": "/c/user.creds",
        "NATS_NKEY": "/c/user.nk",
        "NATS_TOKEN": "tok",
        "NATS_CERT": "/c/cert.pem",
        "NATS_KEY": "/c/key.pem",
        "NATS_CA": "/c/ca.pem",
        "NATS_PASSWORD": "pw",
    }
    opts = NatsOptions.resolve(env=env, config_home=tmp_path)
    assert (opts.creds, opts.nkey, opts.token) == ("/c/user.creds", "/c/user.nk", "tok")
    assert (opts.cert, opts.key, opts.ca, opts.password) == (
        "/c/cert.pem",
        "/c/key.pem",
        "/c/ca.pem",
        "pw",
    )


def test_context_by_name_via_xdg_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    xdg = tmp_path / "xdg"
    write_context(
        xdg,
        "east",
        {
            "description": "east",
            "url": "tls://e1:4222",
            "cert": "~/certs/client.pem",
            "key": "~/certs/client-key.pem",
            "ca": "~/certs/ca.pem",
            "tls_first": True,
            "jetstream_domain": "ignored",
        },
    )
    env = {"XDG_CONFIG_HOME": str(xdg), "NATS_CONTEXT": "east"}
    opts = NatsOptions.resolve(env=env)
    assert opts.context == "east"
    assert opts.servers == ["tls://e1:4222"]
    assert opts.cert == str(tmp_path / "home" / "certs" / "client.pem")
    assert opts.ca == str(tmp_path / "home" / "certs" / "ca.pem")
    assert opts.tls_first is True
    # The --context flag beats NATS_CONTEXT.
    write_context(xdg, "west", {"url": "nats://w1:4222"})
    assert NatsOptions.resolve(context="west", env=env).servers == ["nats://w1:4222"]


def test_context_by_path(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "my.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"url": "nats://p:4222", "token": "pt"}), encoding="utf-8")
    opts = NatsOptions.resolve(context=str(path), env={}, config_home=tmp_path / "none")
    assert (opts.servers, opts.token, opts.context) == (["nats://p:4222"], "pt", "my")


def test_selected_context_from_context_txt(tmp_path: Path) -> None:
    write_context(tmp_path, "chosen", {"url": "nats://chosen:4222"})
    select_context(tmp_path, "chosen")
    opts = NatsOptions.resolve(env={}, config_home=tmp_path)
    assert opts.context == "chosen"
    assert opts.servers == ["nats://chosen:4222"]
    # An explicit NATS_URL still wins over the selected context's url.
    env = {"NATS_URL": "nats://env:4222"}
    assert NatsOptions.resolve(env=env, config_home=tmp_path).servers == ["nats://env:4222"]


def test_context_env_reference(tmp_path: Path) -> None:
    write_context(tmp_path, "ref", {"url": "nats://r:4222", "password": "env://MY_NATS_PW"})
    opts = NatsOptions.resolve(context="ref", env={"MY_NATS_PW": "from-env"}, config_home=tmp_path)
    assert opts.password == "from-env"


def test_missing_context_names_path_and_how_to_list(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        NatsOptions.resolve(context="nope", env={}, config_home=tmp_path)
    line = info.value.one_line()
    assert "'nope'" in line
    assert str(tmp_path / "nats" / "context" / "nope.json") in line
    assert "nats context ls" in line


def test_missing_selected_context(tmp_path: Path) -> None:
    select_context(tmp_path, "gone")
    with pytest.raises(UsageError, match="gone"):
        NatsOptions.resolve(env={}, config_home=tmp_path)


def test_missing_context_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        NatsOptions.resolve(context=str(tmp_path / "x.json"), env={}, config_home=tmp_path)
    assert str(tmp_path / "x.json") in info.value.one_line()


@pytest.mark.parametrize("content", ['{"url": "nats://x:4222",', "[1, 2]"])
def test_malformed_context(tmp_path: Path, content: str) -> None:
    path = write_context(tmp_path, "broken", content)
    with pytest.raises(UsageError) as info:
        NatsOptions.resolve(context="broken", env={}, config_home=tmp_path)
    assert str(path) in info.value.one_line()


# -- connecting to real servers ------------------------------------------------------------


async def roundtrip(nc: Any, subject: str = "snsq2nats.test") -> None:
    sub = await nc.subscribe(subject)
    await nc.publish(subject, BURGER)
    msg = await sub.next_msg(timeout=5)
    assert msg.data == BURGER
    await sub.unsubscribe()


async def test_fixtures_nc_and_js(nc: Any, js: Any) -> None:
    await roundtrip(nc)
    await js.add_stream(name="ORDERS", subjects=["ORDERS.*"])
    ack = await js.publish("ORDERS.received", BURGER)
    assert (ack.stream, ack.seq) == ("ORDERS", 1)


# The streams test_shared_server made so far in this session, in the order it made them.
_SHARED_STREAMS: list[str] = []


@pytest.mark.parametrize("visit", ["first", "second"])
async def test_shared_server(nats_server_shared: NatsServer, visit: str) -> None:
    """The session's one JetStream server: a stream an earlier test made is still there when
    the next test connects (why its users pick unique names), and JetStream answers."""
    nc = await connect_nats(NatsOptions(servers=[nats_server_shared.url]))
    try:
        await roundtrip(nc)
        js = nc.jetstream()
        name = f"shared_{visit}"
        await js.add_stream(name=name, subjects=[f"shared.{visit}"])
        ack = await js.publish(f"shared.{visit}", BURGER)
        assert (ack.stream, ack.seq) == (name, 1)
        _SHARED_STREAMS.append(name)
        # The second visit fails here should each test get a server of its own.
        assert {s.config.name for s in await js.streams_info()} >= set(_SHARED_STREAMS)
    finally:
        await nc.close()


async def test_userpass_connect(nats_userpass_server: AuthServer) -> None:
    srv = nats_userpass_server
    nc = await connect_nats(NatsOptions(servers=[srv.url], user=srv.user, password=srv.password))
    try:
        await roundtrip(nc)
    finally:
        await nc.close()


async def test_wrong_password_is_clear_and_secret_free(
    nats_userpass_server: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    srv = nats_userpass_server
    wrong = "wrong-" + (srv.password or "")
    opts = NatsOptions(servers=[srv.url], user=srv.user, password=wrong)
    with caplog.at_level(logging.DEBUG), pytest.raises(NatsConnectError) as info:
        await connect_nats(opts)
    line = info.value.one_line()
    assert "authorization violation" in line
    assert srv.url in line
    assert "NATS_PASSWORD" in line
    assert wrong not in line and wrong not in caplog.text
    assert info.value.__cause__ is None


async def test_password_in_url_is_redacted(nats_userpass_server: AuthServer) -> None:
    srv = nats_userpass_server
    port = srv.server.port
    with pytest.raises(NatsConnectError) as info:
        await connect_nats(NatsOptions(servers=[f"nats://alice:badpw9@127.0.0.1:{port}"]))
    line = info.value.one_line()
    assert "badpw9" not in line
    assert f"nats://127.0.0.1:{port}" in line
    # The right password in the URL works too, as nats-py supports it.
    ok = f"nats://alice:{srv.password}@127.0.0.1:{port}"
    nc = await connect_nats(NatsOptions(servers=[ok]))
    await nc.close()


async def test_token_connect(nats_token_server: AuthServer) -> None:
    srv = nats_token_server
    nc = await connect_nats(NatsOptions(servers=[srv.url], token=srv.token))
    try:
        await roundtrip(nc)
    finally:
        await nc.close()
    with pytest.raises(NatsConnectError, match="authorization violation") as info:
        await connect_nats(NatsOptions(servers=[srv.url], token="not-the-token"))
    assert "not-the-token" not in info.value.one_line()


async def test_nkey_seed_file_connect(tmp_path: Path) -> None:
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed + b"\n")
    with NatsServer(jetstream=False, users=[{"nkey": public}]) as server:
        env = {"NATS_URL": server.url, "NATS_NKEY": str(seed_file)}
        opts = NatsOptions.resolve(env=env, config_home=tmp_path)
        assert seed.decode() not in repr(opts)
        nc = await connect_nats(opts)
        try:
            await roundtrip(nc)
        finally:
            await nc.close()
        with pytest.raises(NatsConnectError, match="authorization violation"):
            await connect_nats(NatsOptions(servers=[server.url]))
        bad = tmp_path / "bad.nk"
        bad.write_text("SUAGARBAGE\n", encoding="utf-8")
        with pytest.raises(UsageError, match="nkey") as info:
            await connect_nats(NatsOptions(servers=[server.url], nkey=str(bad)))
        assert "GARBAGE" not in info.value.one_line()


async def test_connect_through_context_file(
    nats_userpass_server: AuthServer, tmp_path: Path
) -> None:
    srv = nats_userpass_server
    write_context(tmp_path, "local", {"url": srv.url, "user": srv.user, "password": srv.password})
    select_context(tmp_path, "local")
    opts = NatsOptions.resolve(env={}, config_home=tmp_path)
    assert srv.password and srv.password not in repr(opts)
    nc = await connect_nats(opts)
    try:
        await roundtrip(nc)
    finally:
        await nc.close()


async def test_mtls_connect(nats_tls_server: TlsServer) -> None:
    nc = await connect_nats(nats_tls_server.options())
    try:
        assert nc.connected_url.scheme == "tls"
        await roundtrip(nc)
    finally:
        await nc.close()


async def test_mtls_through_context_with_tilde(
    nats_tls_server: TlsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(nats_tls_server.ca.parent))
    write_context(
        tmp_path,
        "secure",
        {
            "url": nats_tls_server.url,
            "ca": "~/" + nats_tls_server.ca.name,
            "cert": "~/" + nats_tls_server.cert.name,
            "key": "~/" + nats_tls_server.key.name,
        },
    )
    nc = await connect_nats(NatsOptions.resolve(context="secure", env={}, config_home=tmp_path))
    try:
        await roundtrip(nc)
    finally:
        await nc.close()


async def test_mtls_verify_and_map(nats_tls_map_server: TlsServer) -> None:
    nc = await connect_nats(nats_tls_map_server.options())
    try:
        await roundtrip(nc)
    finally:
        await nc.close()


async def test_mtls_without_client_cert_fails_clearly(nats_tls_server: TlsServer) -> None:
    opts = NatsOptions(servers=nats_tls_server.urls, ca=str(nats_tls_server.ca))
    with pytest.raises(NatsConnectError) as info:
        await connect_nats(opts)
    line = info.value.one_line()
    assert "TLS" in line and "NATS_CERT" in line
    assert nats_tls_server.urls[0] in line


async def test_mtls_with_untrusted_cert_or_ca_fails(nats_tls_server: TlsServer) -> None:
    files = nats_tls_server.files
    rogue = NatsOptions(
        servers=nats_tls_server.urls,
        ca=str(files.ca),
        cert=str(files.rogue_cert),
        key=str(files.rogue_key),
    )
    with pytest.raises(NatsConnectError, match="TLS"):
        await connect_nats(rogue)
    # Without our CA the server certificate cannot be verified.
    no_ca = NatsOptions(
        servers=nats_tls_server.urls, cert=str(files.client_cert), key=str(files.client_key)
    )
    with pytest.raises(NatsConnectError, match="TLS"):
        await connect_nats(no_ca)


async def test_missing_cert_file_is_a_usage_error(tmp_path: Path) -> None:
    opts = NatsOptions(servers=["tls://127.0.0.1:1"], ca=str(tmp_path / "nope.pem"))
    with pytest.raises(UsageError, match="ca file") as info:
        await connect_nats(opts)
    assert "NATS_CA" in info.value.one_line()


async def test_unreachable_is_refused_with_redacted_url(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = free_ports(1)
    url = f"nats://bob:topsecret@127.0.0.1:{port}"
    with caplog.at_level(logging.DEBUG), pytest.raises(NatsConnectError) as info:
        await connect_nats(NatsOptions(servers=[url]))
    line = info.value.one_line()
    assert "(connection refused)" in line  # the first refusal ends it: no reconnect loop
    assert f"nats://127.0.0.1:{port}" in line
    assert "topsecret" not in line
    assert "NATS_URL" in line and "nats-server" in line
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out + caplog.text
    assert "topsecret" not in out.err + caplog.text


async def test_silent_server_is_bounded_by_connect_timeout() -> None:
    # A listener that accepts TCP but never speaks NATS, like a wrong port behind a proxy.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"nats://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(NatsConnectError) as info:
            await connect_nats(NatsOptions(servers=[url], connect_timeout=1.0))
    # Ended by the connect timeout (a hang would be stopped by pytest-timeout, and fail).
    assert "(timed out)" in info.value.one_line()
    assert url in info.value.one_line()


async def test_reconnect_defaults_restored(nats_server: NatsServer) -> None:
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        assert nc.options["allow_reconnect"] is True
        assert nc.options["max_reconnect_attempts"] == 60
    finally:
        await nc.close()


async def test_restart_keeps_jetstream_store(nats_server: NatsServer) -> None:
    opts = NatsOptions(servers=[nats_server.url])
    nc = await connect_nats(opts)
    js = nc.jetstream()
    await js.add_stream(name="KEEP", subjects=["keep.>"])
    await js.publish("keep.one", BURGER)
    await nc.close()
    port = nats_server.port
    nats_server.restart()
    assert nats_server.port == port
    nc = await connect_nats(opts)
    try:
        info = await nc.jetstream().stream_info("KEEP")
        assert info.state.messages == 1
    finally:
        await nc.close()
    assert nats_server.log_file.is_file()


# -- clusters: replicas 3 survive losing a node --------------------------------------------


async def publish_and_consume_r3(nc: Any, stream: str, *, kill: Callable[[], None]) -> None:
    js = nc.jetstream()
    info = await js.add_stream(name=stream, subjects=[f"{stream}.*"], num_replicas=3)
    assert info.config.num_replicas == 3
    # A new R3 stream and consumer elect their leaders first (slow on a loaded machine): every
    # step is retried, and the message ids make a retried publish a duplicate the stream drops.
    await retrying(
        lambda: js.publish(f"{stream}.received", BURGER, headers={"Nats-Msg-Id": "first"})
    )
    psub = await retrying(
        lambda: js.pull_subscribe(f"{stream}.received", durable="PROCESSOR", stream=stream)
    )

    async def fetch_one() -> Any:
        (m,) = await psub.fetch(1, timeout=2)
        return m

    msg = await retrying(fetch_one)
    assert msg.data == BURGER
    await retrying(msg.ack_sync)

    kill()

    # Retried through the few seconds the cluster needs to elect new leaders.
    await retrying(
        lambda: js.publish(
            f"{stream}.received", b"another burger", timeout=2, headers={"Nats-Msg-Id": "second"}
        )
    )
    msg = await retrying(fetch_one)
    assert msg.data == b"another burger"
    await retrying(msg.ack_sync)
    info = await retrying(lambda: js.stream_info(stream))
    assert info.state.messages == 2


def _kill_second_node(cluster: NatsCluster) -> Callable[[], None]:
    # Node 0 is the first URL the client may be on; losing any node must be survivable, and
    # killing one we may not be connected to keeps the test about JetStream, not reconnects.
    return lambda: cluster.kill_node(1)


@pytest.mark.slow
async def test_cluster_replicas3_survives_node_loss(nats_cluster: NatsCluster) -> None:
    nc = await connect_nats(NatsOptions(servers=nats_cluster.urls), dont_randomize=True)
    try:
        await publish_and_consume_r3(nc, "ORDERS", kill=_kill_second_node(nats_cluster))
    finally:
        await nc.close()


@pytest.mark.slow
async def test_cluster_node_restart(nats_cluster: NatsCluster) -> None:
    nats_cluster.kill_node(2)
    nats_cluster.start_node(2)
    assert all(n.is_running for n in nats_cluster)
    nc = await connect_nats(NatsOptions(servers=[nats_cluster[2].url]))
    try:
        await roundtrip(nc)
    finally:
        await nc.close()


@pytest.mark.slow
async def test_tls_cluster_replicas3_over_mtls(nats_tls_cluster: TlsServer) -> None:
    assert nats_tls_cluster.cluster is not None
    assert all(u.startswith("tls://") for u in nats_tls_cluster.urls)
    nc = await connect_nats(nats_tls_cluster.options(), dont_randomize=True)
    try:
        await publish_and_consume_r3(nc, "ORDERS", kill=_kill_second_node(nats_tls_cluster.cluster))
    finally:
        await nc.close()


def test_failed_start_reports_log_and_cleans_up() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        server = NatsServer(port=squatter.getsockname()[1], jetstream=False)
        with pytest.raises(LocalNatsError, match="address already in use"), server:
            pass
    assert server.workdir is not None and not server.workdir.exists()
    assert not server.is_running
