"""The deployment example and the process-level surface it relies on: the manifest's args are
real `bridge` flags, its probes hit endpoints a real bridge process answers, and
`bridge --workers N` runs N members under one supervising parent."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from snsq2nats.bridge.fleet import preferred, read_fleet
from snsq2nats.cli import main
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.files import document_json
from snsq2nats.jetstream.api import create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import ServerInfo, StreamSpec
from snsq2nats.plan.buckets import fleet_bucket_spec
from snsq2nats.plan.model import Plan, Route, load_plan
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.bridge import BRIDGE_COMMAND, Bridge, Bridges
from tests.fixtures.wait import until

MANIFEST = Path(__file__).parent.parent / "deploy" / "kubernetes" / "bridge.yaml"


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}


def test_manifest_args_probes_and_ports_match_the_cli(tmp_path: Path) -> None:
    docs = documents()
    assert set(docs) >= {"ConfigMap", "Deployment", "Service"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["snsq2nats"] and container["args"][0] == "bridge"
    command = main.commands["bridge"]
    flags = {opt for param in command.params for opt in param.opts}
    args = [str(a) for a in container["args"][1:]]
    assert {a for a in args if a.startswith("-")} <= flags
    # Under the group's context, as the CLI parses it: a context of its own would leave state
    # behind that changes a later `--help` in this process (tests/test_docs.py).
    parent = main.make_context("snsq2nats", [], resilient_parsing=True)
    params = command.make_context("bridge", args, parent=parent, resilient_parsing=True).params
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert params["metrics_port"] == ports["metrics"]
    # The bridge listens on loopback unless told: the kubelet's probes come from outside.
    assert params["metrics_host"] == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # The plan file is the ConfigMap's key, where its volume is mounted.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    plan_volume = next(n for n, v in volumes.items() if "configMap" in v)
    plan_path = Path(str(params["plan_path"]))
    assert plan_path.parent == Path(mounts[plan_volume])
    configmap = docs["ConfigMap"]
    assert volumes[plan_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    (tmp_path / "plan.json").write_text(configmap["data"][plan_path.name])
    assert load_plan(tmp_path / "plan.json").routes == []  # a placeholder, but a valid plan
    # The environment the CLI reads, and time to drain on SIGTERM (60 s drain timeout).
    env = {e["name"] for e in container["env"]}
    server = next(p for p in command.params if "--server" in p.opts)
    assert server.envvar in env and "NATS_CREDS" in env
    assert pod["terminationGracePeriodSeconds"] > 60
    service = docs["Service"]["spec"]
    assert service["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    (port,) = service["ports"]
    assert port["targetPort"] == "metrics" and port["port"] == ports["metrics"]


# --- real processes ------------------------------------------------------------------------


def free_ports(count: int) -> int:
    """A base port with `count` free ports from it (the workers' metrics ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for offset in range(count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise AssertionError("no free ports")


def probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at `port` (Linux's /proc/net/tcp{,6})."""
    import ipaddress

    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(
                bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8)
            )
            assert len(raw) == width
            found.add(str(ipaddress.ip_address(raw)))
    return found


def text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        return str(reply.read().decode())


async def estate(aws: AwsEndpoint, server: NatsServer, tmp_path: Path, queues: int) -> Path:
    sqs = aws.client("sqs")
    routes = []
    nc = await connect_nats(NatsOptions(servers=[server.url]))
    try:
        await create_stream(nc, fleet_bucket_spec(), pedantic=False)
        for i in range(queues):
            name = f"deploy{i}"
            sqs.create_queue(QueueName=name)
            arn = f"arn:aws:sqs:{aws.region}:123456789012:{name}"
            await create_stream(
                nc, StreamSpec(name=f"sqs_{name}", subjects=[f"sqs.{name}"]), pedantic=False
            )
            routes.append(
                Route(
                    name=f"sqs:{name}",
                    kind="sqs-to-nats",
                    source_arn=arn,
                    aws_arn=arn,
                    stream=f"sqs_{name}",
                    subject=f"sqs.{name}",
                )
            )
    finally:
        await nc.close()
    plan = tmp_path / "plan.json"
    plan.write_bytes(
        document_json(Plan(generated_at="now", server=ServerInfo(reachable=True), routes=routes))
    )
    return plan


def bridge(bridges: Bridges, plan: Path, url: str, *extra: str) -> Bridge:
    return bridges.start("--plan", plan, "-s", url, "--poll-wait", "1", "--lease-ttl", "3", *extra)


async def fleet_members(url: str) -> dict[str, Any]:
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        snapshot = await read_fleet(nc)
        assert snapshot is not None
        return {"members": snapshot.members, "leases": snapshot.leases}
    finally:
        await nc.close()


@pytest.mark.slow
async def test_a_bridge_process_answers_the_manifests_probes(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    plan = await estate(aws, nats_server, tmp_path, 2)
    port = free_ports(1)
    proc = bridge(bridges, plan, nats_server.url, "--metrics-port", str(port))
    try:
        await until(lambda: _is(asyncio.to_thread(probe, port, "/healthz"), 200), what="healthz")
        await until(lambda: _is(asyncio.to_thread(probe, port, "/readyz"), 200), what="readyz 200")
        # Without --metrics-host the endpoint is reachable from this host only.
        assert listening_addresses(port) == {"127.0.0.1"}
        metrics = await asyncio.to_thread(text, port, "/metrics")
        (member,) = (await fleet_members(nats_server.url))["members"]
        assert f'member="{member}"' in metrics
        assert f'snsq2nats_bridge_fleet_routes_held{{member="{member}"}} 2.0' in metrics
        proc.send_signal(signal.SIGTERM)
        proc.assert_exit(0, timeout=30)
    finally:
        proc.kill()
    assert await fleet_members(nats_server.url) == {"members": {}, "leases": {}}


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


@pytest.mark.slow
async def test_workers_are_fleet_members_under_one_parent(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    plan = await estate(aws, nats_server, tmp_path, 4)
    port = free_ports(2)
    parent = bridge(bridges, plan, nats_server.url, "--workers", "2", "--metrics-port", str(port))
    try:
        for p in (port, port + 1):
            await until(
                lambda p=p: _is(asyncio.to_thread(probe, p, "/readyz"), 200),  # type: ignore[misc]
                timeout=60,
                what=f"worker on :{p} ready",
            )

        async def split() -> bool:
            fleet = await fleet_members(nats_server.url)
            members, leases = list(fleet["members"]), fleet["leases"]
            # Each route with the member rendezvous hashing gives it (4 routes may all land
            # on one of two members: the hash decides, not a count).
            return (
                len(members) == 2
                and len(leases) == 4
                and all(
                    lease.member == preferred(route, members) for route, lease in leases.items()
                )
            )

        await until(split, timeout=60, what="two workers sharing four routes")
        pids = {hb.pid for hb in (await fleet_members(nats_server.url))["members"].values()}
        assert parent.pid not in pids and len(pids) == 2
        parent.send_signal(signal.SIGTERM)
        parent.assert_exit(0, timeout=60)
        assert await fleet_members(nats_server.url) == {"members": {}, "leases": {}}

        # A worker that dies makes the parent stop the others and exit non-zero.
        parent = bridge(bridges, plan, nats_server.url, "--workers", "2")

        async def two_members() -> bool:
            return len((await fleet_members(nats_server.url))["members"]) == 2

        await until(two_members, timeout=60, what="two workers again")
        members = (await fleet_members(nats_server.url))["members"].values()
        victim, other = sorted(hb.pid for hb in members)
        import os

        os.kill(victim, signal.SIGKILL)
        parent.assert_exit(1, timeout=60)
        assert "exited with -9" in parent.text(), parent.tail()

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        await until(lambda: gone(other), what="the other worker stopped")
    finally:
        parent.kill()


@pytest.mark.slow
async def test_workers_show_one_live_table_on_a_terminal(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """`bridge --workers 2` on a terminal: the parent shows one live table of every route of
    its workers (fed by what each worker reports), their log lines above it, and the summary of
    all routes at the end."""
    import os
    import pty
    import re
    import threading

    plan = await estate(aws, nats_server, tmp_path, 4)
    sqs = aws.client("sqs")
    for i in range(4):
        url = sqs.get_queue_url(QueueName=f"deploy{i}")["QueueUrl"]
        for n in range(i + 1):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
    master, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    # On a terminal, not into a log file: the terminal's output is what is under test.
    parent = subprocess.Popen(
        [
            *(*BRIDGE_COMMAND, "--plan", str(plan)),
            *("-s", nats_server.url, "--poll-wait", "1", "--lease-ttl", "3", "--workers", "2"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**env, "TERM": "xterm", "COLUMNS": "120"},
    )
    os.close(terminal)
    screen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def text() -> str:
        raw = b"".join(screen).decode("utf-8", "replace")
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)

    def row(route: str, status: str, messages: int) -> str:
        cells = [route, "sqs-to-nats", status, str(messages)]
        return r"\s*│\s*".join(re.escape(c) for c in cells) + r"\s*│"

    def every_route_relayed() -> bool:
        shown = text()
        return all(re.search(row(f"sqs:deploy{i}", "running", i + 1), shown) for i in range(4))

    try:
        await until(every_route_relayed, timeout=90, what="every route relayed in the live table")
        assert "snsq2nats bridge" in text()  # the table's title
        # The workers' own log lines pass through the parent, above the table.
        assert re.search(r"worker [01]: fleet member", text()), text()[-3000:]
        members = (await fleet_members(nats_server.url))["members"]
        assert len({hb.pid for hb in members.values()}) == 2 and parent.pid not in {
            hb.pid for hb in members.values()
        }
        parent.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(parent.wait, 60) == 0
        await asyncio.to_thread(reader.join, 10)
        # The summary of the whole group, once every worker has drained. A worker that leaves
        # first hands its routes over (`released`); the last one stops them (`stopped`).
        for i in range(4):
            summary = rf"route=sqs:deploy{i} kind=sqs-to-nats status=(stopped|released) "
            assert re.search(summary + rf"messages={i + 1}\b", text()), text()[-3000:]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        os.close(master)
