"""The gateway's deployment example is true: its args are real `gateway` flags, its probes and
Prometheus annotations name endpoints a real `snsq2nats gateway` process answers, on the port
the manifest's --listen opens, and the pod gets more time to stop than the gateway takes."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import yaml

from snsq2nats.cli import main
from snsq2nats.cli.gateway import _address
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.gateway.service import STOP_GRACE
from tests.fixtures.gateway import TEST_AUTHENTICATOR, Gateways
from tests.test_fleet_deploy import listening_addresses
from tests.test_gateway_cli import get, plan_file

MANIFEST = Path(__file__).parent.parent / "deploy" / "kubernetes" / "gateway.yaml"


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}


def container() -> dict[str, Any]:
    (only,) = documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def args_of(container: dict[str, Any]) -> dict[str, Any]:
    command = main.commands["gateway"]
    args = [str(a) for a in container["args"][1:]]
    # Under the group's context, as the CLI parses it: alone, click would settle the command's
    # help option without the group's `-h` (and keep it for the rest of the process).
    parent = main.make_context("snsq2nats", [], resilient_parsing=True)
    return dict(command.make_context("gateway", args, parent=parent, resilient_parsing=True).params)


def test_manifest_args_mounts_and_ports_match_the_cli() -> None:
    docs = documents()
    assert set(docs) == {"Deployment", "Service"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    gateway = container()
    assert gateway["command"] == ["snsq2nats"] and gateway["args"][0] == "gateway"
    command = main.commands["gateway"]
    flags = {opt for param in command.params for opt in param.opts}
    assert {str(a) for a in gateway["args"][1:] if str(a).startswith("-")} <= flags
    params = args_of(gateway)
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    host, port = _address(params["listen"])
    # The kubelet's probes and the Service come from outside the pod: not loopback.
    assert (host, port) == ("0.0.0.0", ports["http"])
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # A replica stops within STOP_GRACE (a long poll finishing, then the drain): the kubelet
    # must not SIGKILL it before.
    assert pod["terminationGracePeriodSeconds"] > STOP_GRACE + 5

    mounts = {m["name"]: Path(m["mountPath"]) for m in gateway["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"]}
    assert set(mounts) == set(secrets)
    # The keys file, the identities' creds it names, the gateway's own creds: three Secrets.
    keys = Path(str(params["keys_path"]))
    assert keys.name == "gateway-keys.json" and mounts["keys"] == keys.parent
    # `auth -o DIR` records DIR/creds/<identity>.creds: the identities are mounted there, with
    # DIR the directory the manifest's instructions run `auth` with.
    assert "-o /etc/snsq2nats/auth" in MANIFEST.read_text()
    assert mounts["identities"] == Path("/etc/snsq2nats/auth/creds")
    env = {e["name"]: e for e in gateway["env"]}
    server = next(p for p in command.params if "--server" in p.opts)
    assert server.envvar in env
    assert Path(env["NATS_CREDS"]["value"]).parent == mounts["nats-creds"]
    # The handle secret comes from a Secret, never from the args (others can read those).
    secret = next(p for p in command.params if p.name == "handle_secret")
    assert secret.envvar in env and env[secret.envvar]["valueFrom"]["secretKeyRef"]["key"]
    assert not any("secret" in str(a) for a in gateway["args"])

    service = docs["Service"]
    assert service["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == "http" and service_port["port"] == ports["http"]
    scrape = service["metadata"]["annotations"]
    assert scrape["prometheus.io/scrape"] == "true"
    assert int(scrape["prometheus.io/port"]) == ports["http"]


def test_a_gateway_process_answers_the_manifests_probes_and_scrape(
    moto_server: str, tmp_path: Path, gateways: Gateways
) -> None:
    gateway = container()
    params = args_of(gateway)
    host, _ = _address(params["listen"])
    probes = [gateway[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")]
    scrape = documents()["Service"]["metadata"]["annotations"]["prometheus.io/path"]
    # The manifest's own args, on a free port (8080 may be taken here), serving a plan file
    # with a test verifier instead of the keys the pod mounts.
    args = [str(a) for a in gateway["args"]]
    args[args.index("--listen") + 1] = f"{host}:0"
    assert args[0] == "gateway"  # the fixture's command names it
    with NatsServer(name="gateway-deploy") as server:
        plan = plan_file(moto_server, server.url, tmp_path)
        process = gateways.start(
            *args[1:],
            *("--plan", plan, "--server", server.url),
            *("--authenticator", TEST_AUTHENTICATOR),
            env={"SNSQ2NATS_GATEWAY_SECRET": "s3cret"},
        )
        port = int(process.wait_listening().rsplit(":", 1)[1])
        # Listening on every address, as the probes from the node need.
        assert listening_addresses(port) == {host}
        local = f"http://127.0.0.1:{port}"
        for path in probes:
            assert get(f"{local}{path}")[0] == 200, path
        status, metrics = get(f"{local}{scrape}")
        assert status == 200 and "snsq2nats_gateway_requests_in_flight" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_GRACE + 30) == 0, process.tail()
        assert "gateway stopped" in process.text(), process.tail()
