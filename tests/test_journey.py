"""The whole migration as one test: every part together, as a team runs it, under traffic.

An estate on moto's server (HTTP) — a topic `orders` fanning out through stream sources to a
numeric-filtered, an exact-filtered, a MessageBody-filtered and an unfiltered queue (with a
DLQ); a topic `alerts` fanning out through SNS (a queue reads the envelope); a standard queue
with a DLQ and a FIFO queue with three message groups, each fed by its own producers — is
migrated onto a real nats-server with the README's "Migrating step by step" commands, run as
written (`journey_readme`): `plan`, `auth` (password mode, and JWT mode in a second run),
`apply` as the generated admin, a bridge fleet (`bridge --workers 2` plus a second process) as
the generated bridge identity, and every step of `runbook --json` in its order. Producers and
workers run on both sides throughout (boto3 on AWS; nats-py on NATS under the application's
generated identity, publishing to the subject `snsq2nats subject` prints with attributes as
plain headers). Midway the estate changes (a new queue, a changed filter) and is re-planned and
applied under the running bridges; bridge members get Ctrl-C and kill -9 during traffic.

At the end each application must have processed each of its messages exactly once (a filtered
queue exactly what SNS would deliver, computed with `snsq2nats.filterpolicy`), in group order
for the FIFO queue, with empty DLQs, no permission violation in the server log, and
`snsq2nats status` exiting 0. The failure message says what is wrong, per application.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import itertools
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.demo.nats_server import NatsServer, free_ports
from snsq2nats.filterpolicy import MessageAttribute, parse_policy
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.wait import until
from tests.journey_apps import (
    AwsWorker,
    Ledger,
    NatsWorker,
    Producer,
    Sent,
    order_violations,
)
from tests.journey_readme import (
    Command,
    Result,
    Shell,
    environment,
    section_blocks,
    template_of,
    templates,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

LEASE_TTL = "5"
MAX_RECEIVE_COUNT = "2"
NEW_QUEUE = "orders-audit"

# --- the estate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    queue: str
    topic: str
    policy: dict[str, Any] | None = None
    scope: str = "MessageAttributes"
    raw: bool = True


SUBSCRIPTIONS = [
    Subscription("orders-big", "orders", {"amount": [{"numeric": [">=", 100]}]}),
    Subscription("orders-eu", "orders", {"region": ["eu"]}),
    Subscription("orders-vip", "orders", {"customer": {"tier": ["gold"]}}, "MessageBody"),
    Subscription("orders-all", "orders"),
    Subscription("alerts-ops", "alerts", raw=False),
    Subscription("alerts-pager", "alerts", {"severity": ["critical"]}),
]
# The change midway: a new queue and a changed filter. The values they add (`priority: high`,
# `region: uk`) are only published once the re-plan is applied, so the messages of the window
# in between are routed the same by the old and the new policies: the expectation is exact.
CHANGED = Subscription("orders-eu", "orders", {"region": ["eu", "uk"]})
ADDED = Subscription(NEW_QUEUE, "orders", {"priority": ["high"]})

DLQS = {"orders-all": "orders-all-dlq", "jobs": "jobs-dlq"}
FIFO = "payments.fifo"
GROUPS = ("g1", "g2", "g3")


@dataclass
class Estate:
    aws: AwsEndpoint
    urls: dict[str, str] = field(default_factory=dict)
    arns: dict[str, str] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    sub_arns: dict[str, str] = field(default_factory=dict)
    changed: bool = False

    @property
    def apps(self) -> list[str]:
        """The queues an application reads (not the DLQs)."""
        return [*self.subscriptions, "jobs", FIFO]

    def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> None:
        sqs = self.aws.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes or {})["QueueUrl"]
        self.urls[name] = url
        self.arns[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def subscribe(self, sub: Subscription) -> None:
        attributes = {"RawMessageDelivery": "true" if sub.raw else "false"}
        if sub.policy is not None:
            attributes["FilterPolicy"] = json.dumps(sub.policy)
            attributes["FilterPolicyScope"] = sub.scope
        arn = self.aws.client("sns").subscribe(
            TopicArn=self.arns[sub.topic],
            Protocol="sqs",
            Endpoint=self.arns[sub.queue],
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        self.subscriptions[sub.queue] = sub
        self.sub_arns[sub.queue] = arn

    def seed(self) -> None:
        sns = self.aws.client("sns")
        for topic in ("orders", "alerts"):
            self.arns[topic] = sns.create_topic(Name=topic)["TopicArn"]
        for dlq in DLQS.values():
            self.create_queue(dlq)
        for sub in SUBSCRIPTIONS:
            self.create_queue(sub.queue, self._redrive(sub.queue))
            self.subscribe(sub)
        self.create_queue("jobs", self._redrive("jobs"))
        self.create_queue(FIFO, {"FifoQueue": "true", "ContentBasedDeduplication": "false"})

    def _redrive(self, queue: str) -> dict[str, str]:
        if queue not in DLQS:
            return {}
        policy = {"deadLetterTargetArn": self.arns[DLQS[queue]], "maxReceiveCount": "2"}
        return {"RedrivePolicy": json.dumps(policy)}

    def change(self) -> None:
        """On AWS: a new queue subscribed to `orders`, and `orders-eu`'s filter widened."""
        self.create_queue(NEW_QUEUE)
        self.subscribe(ADDED)
        self.aws.client("sns").set_subscription_attributes(
            SubscriptionArn=self.sub_arns[CHANGED.queue],
            AttributeName="FilterPolicy",
            AttributeValue=json.dumps(CHANGED.policy),
        )
        self.subscriptions[CHANGED.queue] = CHANGED

    def expected(self, ledger: Ledger) -> dict[str, set[str]]:
        """What SNS and SQS deliver to each application for what was published."""
        policies = {
            q: parse_policy(s.policy, scope=s.scope)  # type: ignore[arg-type]
            for q, s in self.subscriptions.items()
            if s.policy is not None
        }
        want: dict[str, set[str]] = {app: set() for app in self.apps}
        with ledger.lock:
            sent = list(ledger.sent)
        for message in sent:
            if message.target in self.urls:  # sent to a queue directly
                want[message.target].add(message.id)
                continue
            attributes = {n: MessageAttribute(t, v) for n, (t, v) in message.attributes.items()}
            for queue, sub in self.subscriptions.items():
                if sub.topic != message.target:
                    continue
                policy = policies.get(queue)
                if policy is None or policy.matches(attributes, json.dumps(message.body)):
                    want[queue].add(message.id)
        return want


def make_message(estate: Estate, target: str, n: int, side: str) -> Sent:
    mid = f"{target}-{side}-{n:05d}"
    if target == "orders":
        regions = ["eu", "us", None, "uk"] if estate.changed else ["eu", "us", None]
        region = regions[n % len(regions)]
        amount = (n * 37) % 250
        attributes = {"amount": ("Number", str(amount))}
        if region is not None:
            attributes["region"] = ("String", region)
        if estate.changed and n % 4 == 0:
            attributes["priority"] = ("String", "high")
        tier = "gold" if n % 3 == 0 else "silver"
        body = {"id": mid, "amount": amount, "customer": {"tier": tier}}
        return Sent(mid, target, side, attributes, body)
    if target == "alerts":
        severity = ("critical", "warning", "info")[n % 3]
        return Sent(mid, target, side, {"severity": ("String", severity)}, {"id": mid})
    if target == FIFO:
        group = GROUPS[n % len(GROUPS)]
        seq = n // len(GROUPS)
        body = {"id": mid, "group": group, "seq": seq}
        return Sent(mid, target, side, {}, body, group, seq)
    return Sent(mid, target, side, {"kind": ("String", "job")}, {"id": mid})


# --- the NATS server with the generated identities ---------------------------------------------


@dataclass(eq=False)
class JourneyServer(NatsServer):
    """A nats-server whose config includes the file `snsq2nats auth` wrote, as a team's does."""

    include: Path | None = None

    def write_config(self) -> Path:
        path = super().write_config()
        if self.include is not None:
            relative = os.path.relpath(self.include, self.dir)
            with path.open("a", encoding="utf-8") as config:
                config.write(f'include "{relative}"\n')
        return path

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    async def reload(self) -> None:
        """Rewrite the config and reload it (SIGHUP), as an operator does."""
        before = self.log_text().count("Reloaded server configuration")
        self.write_config()
        assert self.pid is not None
        os.kill(self.pid, signal.SIGHUP)
        await until(
            lambda: self.log_text().count("Reloaded server configuration") > before,
            what="nats-server to reload its configuration",
            timeout=60,
        )


@pytest.fixture
def journey_server() -> Iterator[JourneyServer]:
    with JourneyServer(name="journey") as server:
        yield server


# --- the bridge fleet -------------------------------------------------------------------------


@dataclass
class Member:
    label: str
    process: subprocess.Popen[bytes]
    metrics: list[int]
    serial: int


@dataclass
class Fleet:
    """The README's background bridge command as the fleet: member A as written (`--workers
    2`), member B the same command as one process (another host)."""

    shell: Shell
    command: Command
    members: dict[str, Member] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    handling: set[str] = field(default_factory=set)
    """Members being stopped on purpose (the supervisor leaves them alone)."""
    stopping: bool = False
    task: asyncio.Task[None] | None = None

    async def supervise(self) -> None:
        """As systemd or Kubernetes would: a member that exits on its own is a finding (with
        its log's last lines) and is started again."""
        while not self.stopping:
            for label, member in list(self.members.items()):
                if label in self.handling or member.process.poll() is None:
                    continue
                log = self.shell.logs / f"bridge-{label}-{member.serial}.log"
                tail = log.read_text(errors="replace").splitlines()[-12:] if log.exists() else []
                self.findings.append(
                    f"bridge {label} exited on its own with {member.process.returncode}; "
                    "log:\n    " + "\n    ".join(tail)
                )
                self.handling.add(label)
                try:
                    self.start(label)
                    await self.ready(label)
                finally:
                    self.handling.discard(label)
            # Polls the members like a supervisor; nothing waits on this pause.
            await asyncio.sleep(1)

    def start(self, label: str) -> Member:
        words = list(self.command.words)
        workers = 1
        if label == "B" and "--workers" in words:
            at = words.index("--workers")
            del words[at : at + 2]
        elif "--workers" in words:
            workers = int(words[words.index("--workers") + 1])
        ports = _consecutive_free_ports(workers)
        extra = ["--lease-ttl", LEASE_TTL, "--metrics-port", str(ports[0])]
        command = Command(self.command.line, dict(self.command.env), [*words, *extra], True)
        process = self.shell.start(command, name=f"bridge-{label}")
        member = Member(label, process, ports, self.shell.started)
        self.members[label] = member
        return member

    async def ready(self, label: str) -> None:
        """Every worker of a member answers /readyz 200; a member never ready is a finding."""
        member = self.members[label]
        reasons: dict[int, str] = {}

        def check() -> bool:
            for port in member.metrics:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                        reasons.pop(port, None)
                except urllib.error.HTTPError as err:
                    reasons[port] = f"{err.code} {err.read()[:300]!r}"
                except (OSError, http.client.HTTPException) as err:
                    reasons[port] = f"{type(err).__name__}: {err}"
            return not reasons

        try:
            await until(check, what=f"bridge {label} ready", timeout=180)
        except AssertionError:
            self.findings.append(f"bridge {label} not ready after 180 s: {reasons}")

    async def event(self, what: str, label: str) -> None:
        """Stop member `label` as `what` says (ctrl-c, kill-9, kill-9-worker), then start it
        again, as an operator or a supervisor would."""
        self.handling.add(label)
        print(f"journey: {what} bridge {label}", flush=True)
        try:
            member = self.members[label]
            if member.process.poll() is not None:
                self.events.append(f"{what} bridge {label}: it was not running")
            else:
                await getattr(self, "_" + what.replace("-", "_"))(member)
            self.start(label)
            await self.ready(label)
        finally:
            self.handling.discard(label)

    async def _ctrl_c(self, member: Member) -> None:
        """A terminal's Ctrl-C: SIGINT to the member's process group."""
        started = time.monotonic()
        os.killpg(member.process.pid, signal.SIGINT)
        code = await self._exit(member, 180)
        self.events.append(
            f"Ctrl-C bridge {member.label}: exit {code} after {time.monotonic() - started:.1f}s"
        )

    async def _kill_9(self, member: Member) -> None:
        member.process.send_signal(signal.SIGKILL)
        await self._exit(member, 60)
        self.events.append(f"kill -9 bridge {member.label}")
        leftovers = await self._orphans(member)
        if leftovers:
            self.findings.append(
                f"kill -9 of bridge {member.label} (pid {member.process.pid}) left its workers "
                f"{leftovers} running"
            )
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    async def _kill_9_worker(self, member: Member) -> None:
        """kill -9 one `--workers` child: the parent stops the group and exits non-zero."""
        children = _children(member.process.pid)
        if not children:
            self.findings.append(f"bridge {member.label} has no worker processes to kill")
            return
        os.kill(children[0], signal.SIGKILL)
        code = await self._exit(member, 180)
        self.events.append(f"kill -9 a worker of bridge {member.label}: parent exit {code}")

    async def _exit(self, member: Member, timeout: float) -> int | None:
        try:
            await until(
                lambda: member.process.poll() is not None,
                what=f"bridge {member.label} to exit",
                timeout=timeout,
            )
        except AssertionError:
            self.findings.append(f"bridge {member.label} still running {timeout:g}s after a stop")
            member.process.kill()
            member.process.wait()
        return member.process.returncode

    async def _orphans(self, member: Member) -> list[int]:
        """Worker processes whose parent was this member, still alive after a grace period."""
        pids: list[int] = []

        def alive() -> list[int]:
            found = []
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    stat = (entry / "stat").read_text()
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[-1].split()
                if fields and fields[0] == "Z":
                    continue
                if "snsq2nats bridge" in cmdline and f"--metrics-port {member.metrics[0]}" in (
                    cmdline
                ):
                    found.append(int(entry.name))
            return found

        try:
            await until(lambda: not alive(), what="the workers to follow their parent", timeout=30)
        except AssertionError:
            pids = alive()
        return pids

    async def stop_all(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for member in self.members.values():
            if member.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.process.pid, signal.SIGTERM)
        for member in self.members.values():
            await self._exit(member, 120)
            for pid in await self._orphans(member):
                self.findings.append(f"bridge {member.label}'s worker {pid} outlived its parent")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _consecutive_free_ports(count: int) -> list[int]:
    """Worker i serves metrics on the base port + i: `count` free ports in a row, taken through
    `free_ports` so later calls do not hand them out again (in a test worker's port range they
    come in a row already)."""
    for _ in range(100):
        ports = free_ports(count)
        if ports == list(range(ports[0], ports[0] + count)):
            return ports
    while True:
        base = free_ports(1)[0]
        ports = [base + i for i in range(count)]
        try:
            with contextlib.ExitStack() as stack:
                for port in ports[1:]:
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return ports


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


# --- the journey --------------------------------------------------------------------------------


@dataclass
class Journey:
    mode: str
    estate: Estate
    server: JourneyServer
    shell: Shell
    blocks: dict[str, list[str]]
    ledger: Ledger = field(default_factory=Ledger)
    producers: dict[str, Producer] = field(default_factory=dict)
    aws_workers: dict[str, AwsWorker] = field(default_factory=dict)
    nats_workers: dict[str, list[NatsWorker]] = field(default_factory=dict)
    fleet: Fleet | None = None
    findings: list[str] = field(default_factory=list)
    steps_run: list[str] = field(default_factory=list)
    subjects: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)
    connections: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, list[str]] = field(default_factory=dict)
    identities: dict[tuple[str, str], str] = field(default_factory=dict)
    plan_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def team(self) -> Path:
        return self.shell.cwd

    # --- README lines ---

    def auth_words(self) -> list[str]:
        return ["--format", "jwt"] if self.mode == "jwt" else []

    async def run_line(self, line: str, *, check: bool = True) -> list[Any]:
        words = shlex.split(line, comments=True)
        extra = self.auth_words() if words[:2] == ["snsq2nats", "auth"] else None
        if "bridge" in words:
            assert self.fleet is None, "one bridge line in the README's setup"
            (command,) = [c for c in _parse(line, self.shell.env) if c.background]
            self.fleet = Fleet(self.shell, command)
            self.fleet.start("A")
            self.fleet.start("B")
            await self.fleet.ready("A")
            await self.fleet.ready("B")
            return []
        done = await asyncio.to_thread(self.shell.run, line, extra=extra, check=check)
        if words[:2] == ["snsq2nats", "auth"]:
            await self.identities_in_server()
        return done

    async def identities_in_server(self) -> None:
        """What the auth line's comment says: include the generated config, reload."""
        if self.mode == "jwt":
            if self.server.include is None:
                # Operator mode cannot be switched on by a reload: a restart, before apply.
                self.server.include = self.team / "auth" / "snsq2nats-jwt.conf"
                await asyncio.to_thread(self.server.stop)
                await asyncio.to_thread(self.server.start)
            # Later runs re-sign only the users' JWTs (their creds files): nothing to reload,
            # but a client keeps the permissions it connected with. As the README's change
            # block says: the bridges restart one at a time and the applications reconnect,
            # each presenting its new creds (nats-py reads the file on every connect).
            if self.fleet is not None:
                for label in sorted(self.fleet.members):
                    await self.fleet.event("ctrl-c", label)
            stale, self.connections = self.connections, {}
            for nc in stale.values():
                with contextlib.suppress(Exception):
                    await nc.drain()
            return
        self.server.include = self.team / "auth" / "snsq2nats-auth.conf"
        await self.server.reload()

    def runbook(self) -> list[dict[str, Any]]:
        book = json.loads((self.team / "runbook.json").read_text())
        steps = [s for g in book["groups"] for s in g["steps"]]
        for step in steps:
            for text in step["changes"]:
                found = re.findall(r"--attr ([A-Za-z0-9_.:-]+)=", text)
                if found:
                    self.tokens[step["resource"]] = found
        return steps

    # --- identities and subjects, as the tool prints them ---

    def identity(self, role: str, name: str) -> str:
        """The generated identity of `role` for a queue or topic (`auth --json` lists the
        same: names follow from the plan)."""
        from snsq2nats.auth.identities import identities
        from snsq2nats.plan.model import load_plan

        if (role, name) not in self.identities:
            plan = load_plan(self.team / "plan.json")
            arn = next(r.source_arn for r in plan.resources if r.name == name)
            matches = [i.name for i in identities(plan) if i.role == role and i.serves == arn]
            assert matches, f"no generated {role} identity for {name}"
            self.identities[(role, name)] = matches[0]
        return self.identities[(role, name)]

    async def connect(self, identity: str) -> Any:
        import nats

        context = json.loads((self.team / "auth" / "contexts" / f"{identity}.json").read_text())
        credentials: dict[str, Any] = {}
        if "creds" in context:
            credentials["user_credentials"] = context["creds"]
        else:
            credentials.update(user=context["user"], password=context["password"])

        async def on_error(err: Exception) -> None:
            self.ledger.error(f"NATS client {identity}: {type(err).__name__}: {err}")

        return await nats.connect(
            self.server.url,
            inbox_prefix=context["inbox_prefix"],
            error_cb=on_error,
            max_reconnect_attempts=-1,
            **credentials,
        )

    async def cli(self, template: str, name: str, placeholder: str, attrs: list[str]) -> str:
        words = shlex.split(template, comments=True)
        out: list[str] = []
        skip = False
        for i, word in enumerate(words):
            if skip:
                skip = False
                continue
            if word == "--attr" and i + 1 < len(words) and words[i + 1] == "NAME=VALUE":
                for attr in attrs:
                    out += ["--attr", attr]
                skip = True
                continue
            out.append(name if word == placeholder else word)
        command = Command(template, {}, out)
        result = await asyncio.to_thread(self.shell.call, command)
        assert result.returncode == 0, f"{' '.join(out)}: {result.output}"
        return result.stdout.strip()

    def template(self, start: str) -> str:
        (line,) = [line for line in self.blocks["steps"] if line.startswith(start)]
        return line

    async def durables(self, queue: str) -> list[tuple[str, str]]:
        output = await self.cli(
            self.template("snsq2nats subject QUEUE --durable"), queue, "QUEUE", []
        )
        return [
            (parts[0], parts[1])
            for parts in (line.split() for line in output.splitlines())
            if len(parts) == 2
        ]

    async def subject(self, name: str, message: Sent) -> str:
        tokens = self.tokens.get(name, [])
        attrs = [
            f"{t}={message.group if t == 'MessageGroupId' else message.attributes[t][1]}"
            for t in tokens
            if t == "MessageGroupId" or t in message.attributes
        ]
        key = (name, tuple(attrs))
        if key not in self.subjects:
            # A subject not asked for yet waits for the plan being changed to be applied
            # (a team publishes to what the applied plan says).
            await self.plan_ready.wait()
            template = self.template("snsq2nats subject TOPIC")
            self.subjects[key] = await self.cli(template, name, "TOPIC", attrs)
        return self.subjects[key]

    # --- the applications ---

    def start_producers(self) -> None:
        sns, sqs = self.estate.aws.client("sns"), self.estate.aws.client("sqs")

        def aws_topic(message: Sent) -> Any:
            return asyncio.to_thread(
                sns.publish,
                TopicArn=self.estate.arns[message.target],
                Message=json.dumps(message.body),
                MessageAttributes={
                    n: {"DataType": t, "StringValue": v} for n, (t, v) in message.attributes.items()
                },
            )

        def aws_queue(message: Sent) -> Any:
            extra = (
                {"MessageGroupId": message.group, "MessageDeduplicationId": message.id}
                if message.group
                else {}
            )
            attributes = {
                n: {"DataType": t, "StringValue": v} for n, (t, v) in message.attributes.items()
            }
            kwargs = {"MessageAttributes": attributes} if attributes else {}
            return asyncio.to_thread(
                sqs.send_message,
                QueueUrl=self.estate.urls[message.target],
                MessageBody=json.dumps(message.body),
                **extra,
                **kwargs,
            )

        def on_nats(role: str, name: str) -> Any:
            async def publish(message: Sent) -> None:
                identity = self.identity(role, name)
                if identity not in self.connections:
                    self.connections[identity] = await self.connect(identity)
                js = self.connections[identity].jetstream()
                subject = await self.subject(name, message)
                # As the runbook says: each attribute a header of the same name (string
                # value); Nats-Msg-Id from the plan's deduplication note.
                headers = {n: v for n, (_t, v) in message.attributes.items()}
                headers["Nats-Msg-Id"] = message.id
                await js.publish(subject, json.dumps(message.body).encode(), headers=headers)

            return publish

        plan = [
            ("orders", aws_topic, "publisher", 0.6),
            ("alerts", aws_topic, "publisher", 1.5),
            ("jobs", aws_queue, "producer", 1.5),
            (FIFO, aws_queue, "producer", 1.5),
        ]
        for target, on_aws, role, interval in plan:
            self.producers[target] = Producer(
                self.ledger,
                target,
                lambda n, side, t=target: make_message(self.estate, t, n, side),
                {"aws": on_aws, "nats": on_nats(role, target)},
                interval,
            )

    def start_aws_worker(self, app: str) -> None:
        sqs = self.estate.aws.client("sqs")
        self.aws_workers[app] = AwsWorker(self.ledger, app, sqs, self.estate.urls[app])

    async def traffic(self, messages: int) -> None:
        """Let `messages` more go out; producers that cannot publish are a finding."""
        mark = len(self.ledger.sent)
        try:
            await until(
                lambda: len(self.ledger.sent) >= mark + messages, what="traffic", timeout=300
            )
        except AssertionError:
            self.findings.append(
                f"producers published {len(self.ledger.sent) - mark} message(s) in 300 s "
                f"(wanted {messages}); last client errors: {self.ledger.errors[-3:]}"
            )

    # --- the steps ---

    async def step(self, step: dict[str, Any]) -> None:
        number, command = step["number"], step["command"]
        title = f"step {number} ({step['resource']}: {step['action']} {step['to'] or ''})".strip()
        if step["status"] == "done":
            return
        if step["status"] == "blocked" or command is None:
            self.findings.append(f"runbook {title} blocked: {step['blocked']}")
            return
        names = {step["resource"]: "QUEUE" if step["kind"] == "queue" else "TOPIC"}
        template = template_of(command, names)
        if template not in templates(self.blocks["steps"]):
            self.findings.append(
                f"runbook {title}: `{command}` matches no README step template "
                f"({sorted(templates(self.blocks['steps']))})"
            )
        resource, action, to = step["resource"], step["action"], step["to"]
        app = resource in self.estate.apps
        if action == "consumers" and app:
            workers = []
            for stream, durable in await self.durables(resource):
                identity = self.identity("consumer", resource)
                workers.append(
                    NatsWorker(
                        self.ledger,
                        resource,
                        lambda i=identity: self.connect(i),
                        stream,
                        durable,
                    )
                )
            self.nats_workers[resource] = workers
            if _stop_first(step) and resource in self.aws_workers:
                await asyncio.to_thread(self.aws_workers.pop(resource).halt)
        producer = self.producers.get(resource)
        # A FIFO queue's producers move with `--wait`: the AWS ones stop first and the NATS
        # ones start once it returned (the runbook's caveat).
        drained_first = action == "producers" and command.rstrip().endswith("--wait")
        if action == "producers" and producer is not None and to == "nats":
            producer.sides = set() if drained_first else {"nats"}
        started = time.monotonic()
        # A step that never returns (a drain nothing serves) is a finding; once two did, the
        # rest get a shorter bound so the journey still reaches its report.
        bound = 240 if len([f for f in self.findings if "exit 124" in f]) < 2 else 45
        print(f"journey: {title}: {command}", flush=True)
        result = await asyncio.to_thread(
            self.shell.run,
            f"snsq2nats {command.removeprefix('snsq2nats ')}",
            check=False,
            timeout=bound,
        )
        outcome = result[-1] if result else None
        took = time.monotonic() - started
        self.steps_run.append(f"{title} {took:.1f}s")
        if isinstance(outcome, Result) and outcome.returncode != 0:
            self.findings.append(
                f"runbook {title}: `{command}` exit {outcome.returncode}: "
                f"{outcome.output.strip()[-600:]}"
            )
        if drained_first and producer is not None:
            producer.sides = {"nats"}
        if action == "producers" and producer is not None and to == "both":
            producer.sides = {"aws", "nats"}  # then the new publishers roll out
        if action == "consumers" and resource in self.aws_workers:
            # `--wait` returned: the old workers may stop now.
            await asyncio.to_thread(self.aws_workers.pop(resource).halt)

    async def change(self) -> None:
        """The estate changes on AWS; the README's change block re-plans and applies it."""
        self.plan_ready.clear()
        self.estate.change()
        self.start_aws_worker(NEW_QUEUE)
        for line in self.blocks["change"]:
            await self.run_line(line)
        self.runbook()  # the new plan's subject tokens
        self.subjects.clear()  # a new plan may say new subjects
        self.identities.clear()
        self.plan_ready.set()
        print("journey: the estate changed, re-planned and applied", flush=True)
        self.estate.changed = True


def _parse(line: str, env: dict[str, str]) -> list[Command]:
    from tests.journey_readme import parse_line

    return parse_line(line, env)


def _stop_first(step: dict[str, Any]) -> bool:
    """Whether the runbook tells the team to stop the old workers before this move."""
    text = " ".join([*step["changes"], *step["caveats"]]).lower()
    return bool(re.search(r"must (be )?stop(ped)? (first|before)|stop them before", text))


def prepare(mode: str, aws: AwsEndpoint, server: JourneyServer, tmp_path: Path) -> Journey:
    """The estate seeded, the team's directory, the README's blocks: nothing started yet."""
    team = tmp_path / "team"
    logs = tmp_path / "logs"
    team.mkdir()
    logs.mkdir()
    env = environment({"NATS_URL": server.url, "PWD": str(team), "NO_COLOR": "1"})
    estate = Estate(aws)
    estate.seed()
    return Journey(mode, estate, server, Shell(team, env, logs), section_blocks())


async def run_journey(journey: Journey) -> None:
    """Traffic on AWS, then the README's setup and every runbook step in order, with the
    change midway and the stops of bridge members; the producers stop at the end."""
    journey.plan_ready.set()
    for app in journey.estate.apps:
        journey.start_aws_worker(app)
    journey.start_producers()
    try:
        await journey.traffic(8)
        for line in journey.blocks["setup"]:
            await journey.run_line(line)
        assert journey.fleet is not None, "the README's setup starts the bridge"
        steps = journey.runbook()
        fleet = journey.fleet
        fleet.task = asyncio.create_task(fleet.supervise())
        # After which step each stop happens: Ctrl-C and kill -9 of either member, a worker.
        events = {
            3: ("ctrl-c", "A"),
            7: ("kill-9", "B"),
            13: ("kill-9-worker", "A"),
            19: ("ctrl-c", "B"),
            25: ("kill-9", "A"),
        }
        done = 0
        changed = False
        while True:
            todo = [s for s in steps if s["status"] == "todo" and s["command"]]
            blocked = [s for s in steps if s["status"] == "blocked" or not s["command"]]
            if not todo:
                for step in blocked:
                    await journey.step(step)
                break
            step = todo[0]
            await journey.step(step)
            step["status"] = "done"
            done += 1
            if done in events:
                await fleet.event(*events[done])
            await journey.traffic(4)
            if (
                not changed
                and step["action"] == "producers"
                and step["resource"] == "orders"
                and step["to"] == "both"
            ):
                changed = True
                await journey.change()
                steps = journey.runbook()
                await journey.traffic(4)
        assert changed, "the runbook moved orders' producers to both sides"
        await journey.traffic(6)
    finally:
        for producer in journey.producers.values():
            await producer.halt()


async def settle_and_judge(journey: Journey) -> str:
    """Wait for the applications to be done, then everything the issue lists, as one report."""
    estate, ledger = journey.estate, journey.ledger
    want = estate.expected(ledger)
    lines: list[str] = []

    def complete() -> bool:
        return all(want[app] <= ledger.ids(app) for app in estate.apps)

    try:
        await until(complete, what="every application's messages", timeout=300)
    except AssertionError:
        lines.append("not every application got its messages within 300 s (see LOST below)")
    with contextlib.suppress(AssertionError):
        await until(lambda: quiet(journey), what="every queue and durable empty", timeout=120)
    # Late duplicates would have arrived by now; count with the workers still running.
    reports = [ledger.report(app, want[app]) for app in estate.apps]
    admin = journey.team / "auth" / "contexts" / "snsq2nats-admin.json"
    status: list[Result] = []
    for line in journey.blocks["check"]:
        status += [r for r in await journey.run_line(line, check=False) if isinstance(r, Result)]
    dlqs = await dlq_contents(journey, admin)
    violations = permission_violations(journey.server.log_text(), jwt_names(journey.team / "auth"))
    lines += [r.line() for r in reports if not r.clean]
    lines += [f"DLQ {name}: {what}" for name, what in dlqs.items() if what]
    lines += [f"server: {v}" for v in violations]
    lines += [f"client: {e}" for e in ledger.errors if "gave up" in e or "without an id" in e]
    for result in status:
        if result.returncode != 0:
            lines.append(f"`{result.command.line}` exit {result.returncode}:\n{result.output}")
    assert journey.fleet is not None
    lines += journey.findings + journey.fleet.findings
    summary = [
        f"journey ({journey.mode}): {len(ledger.sent)} messages published, "
        f"{ledger.total_received()} processed; steps {len(journey.steps_run)}",
        "events: " + "; ".join(journey.fleet.events),
        "slowest steps: " + "; ".join(sorted(journey.steps_run, key=_took, reverse=True)[:5]),
        *(r.line() for r in reports),
        *(f"client error: {e}" for e in ledger.errors[:15]),
    ]
    print("\n".join(summary))
    return "\n".join(lines)


def _took(step: str) -> float:
    return float(step.rsplit(" ", 1)[-1].rstrip("s"))


def permission_violations(log: str, names: dict[str, str] | None = None) -> list[str]:
    """The server log's permission violations, one line per (identity, kind, subject) with its
    count: which identity lacks which grant. `names` maps a JWT user's public key to its
    identity (the server logs operator-mode users by key)."""
    pattern = re.compile(r'"([^"]*)" - (\w+ Violation) - Subject "([^"]+)"')
    counts: dict[tuple[str, str, str], int] = {}
    other = 0
    for line in log.splitlines():
        if "violation" not in line.lower():
            continue
        match = pattern.search(line)
        if match is None:
            other += 1
            continue
        who = match.group(1).rsplit(":", 1)[-1]
        key = ((names or {}).get(who, who), match.group(2), match.group(3))
        counts[key] = counts.get(key, 0) + 1
    out = [
        f"{kind} ×{n}: user {user}, subject {subject}"
        for (user, kind, subject), n in sorted(counts.items(), key=lambda kv: -kv[1])
    ]
    if other:
        out.append(f"{other} more violation line(s) in another format")
    return out


def jwt_names(auth: Path) -> dict[str, str]:
    """User public key → identity name, from the creds files `auth --format jwt` wrote."""
    out = {}
    for creds in sorted((auth / "creds").glob("*.creds")):
        token = creds.read_text().split("-----\n")[1].split("\n")[0]
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        out[claims["sub"]] = claims["name"]
    return out


def quiet(journey: Journey) -> bool:
    sqs = journey.estate.aws.client("sqs")
    for app in journey.estate.apps:
        attributes = sqs.get_queue_attributes(
            QueueUrl=journey.estate.urls[app],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if any(int(v) for v in attributes.values()):
            return False
    return True


async def dlq_contents(journey: Journey, admin: Path) -> dict[str, str]:
    """Each DLQ's messages, on AWS (received, so listed) and in its stream."""
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats
    from snsq2nats.plan.model import load_plan

    sqs = journey.estate.aws.client("sqs")
    plan = load_plan(journey.team / "plan.json")
    out: dict[str, str] = {}
    nc = await connect_nats(NatsOptions.resolve(journey.server.url, str(admin)))
    try:
        js = nc.jetstream()
        for dlq in DLQS.values():
            ids = []
            for _ in range(5):
                reply = sqs.receive_message(
                    QueueUrl=journey.estate.urls[dlq], MaxNumberOfMessages=10, WaitTimeSeconds=0
                )
                ids += [_id_of(m["Body"]) for m in reply.get("Messages") or []]
            resource = next(r for r in plan.resources if r.name == dlq)
            in_stream = 0
            if resource.stream:
                with contextlib.suppress(Exception):
                    in_stream = (await js.stream_info(resource.stream)).state.messages
            parts = []
            if ids:
                parts.append(f"sqs {len(ids)} [{', '.join(sorted(ids)[:8])}]")
            if in_stream:
                parts.append(f"stream {resource.stream} {in_stream} message(s)")
            out[dlq] = "; ".join(parts)
    finally:
        await nc.close()
    return out


def _id_of(body: str) -> str:
    from tests.journey_apps import message_id

    try:
        return message_id(body)[0]
    except (ValueError, KeyError):
        return body[:60]


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.journey
@pytest.mark.parametrize("mode", ["password", "jwt"])
async def test_the_whole_journey_under_traffic(
    mode: str, aws: AwsEndpoint, journey_server: JourneyServer, tmp_path: Path
) -> None:
    # moto's server logs every request: thousands of lines that would bury the report.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    journey = prepare(mode, aws, journey_server, tmp_path)
    late: list[str] = []
    try:
        await run_journey(journey)
        problems = await settle_and_judge(journey)
    finally:
        for producer in journey.producers.values():
            if not producer.stopping.is_set():
                await producer.halt()
        for worker in journey.aws_workers.values():
            await asyncio.to_thread(worker.halt)
        for workers in journey.nats_workers.values():
            for nats_worker in workers:
                await nats_worker.halt()
        for nc in journey.connections.values():
            await nc.close()
        if journey.fleet is not None:
            seen = len(journey.fleet.findings)
            await journey.fleet.stop_all()
            late = journey.fleet.findings[seen:]
    problems = "\n".join([problems, *late]).strip()
    assert not problems, f"the journey ({mode}) is not exact:\n{problems}"


def test_readme_steps_are_the_runbooks_commands() -> None:
    """Every command shape `runbook` writes is a README step template, and the README's
    blocks parse as the journey runs them."""
    blocks = section_blocks()
    shapes = templates(blocks["steps"])
    for command, names in [
        ("snsq2nats cutover consumers jobs --to nats --wait", {"jobs": "QUEUE"}),
        ("snsq2nats cutover producers orders --to both", {"orders": "TOPIC"}),
        ("snsq2nats cutover producers orders --to nats", {"orders": "TOPIC"}),
        ("snsq2nats cutover producers jobs --to nats", {"jobs": "QUEUE"}),
        ("snsq2nats cutover finish jobs --wait", {"jobs": "QUEUE"}),
        ("snsq2nats cutover finish orders", {"orders": "TOPIC"}),
    ]:
        assert template_of(command, names) in shapes, command
    env = {"NATS_URL": "nats://h:1", "PWD": "/team"}
    from tests.journey_readme import parse_line

    parsed = [c for line in blocks["setup"] for c in parse_line(line, env)]
    exported = [c for c in parsed if not c.words]
    assert exported and exported[0].env["NATS_CONTEXT"].startswith("/team/auth/contexts/")
    (bridge,) = [c for c in parsed if c.background]
    assert bridge.snsq2nats[0] == "bridge" and bridge.env["NATS_CONTEXT"].endswith(
        "snsq2nats-bridge.json"
    )


def test_the_ledger_catches_loss_duplicates_strays_and_disorder() -> None:
    """The judge itself: an injected loss, duplicate, stray and group reordering each show."""
    ledger = Ledger()
    for i in range(6):
        ledger.published(Sent(f"m{i}", "q", "aws", {}, {"id": f"m{i}"}, "g", i))
    for i in (0, 2, 1, 3, 3, 5):  # m4 lost, m3 twice, m1 after m2
        ledger.processed("q", json.dumps({"id": f"m{i}", "group": "g", "seq": i}), "nats")
    ledger.processed("q", json.dumps({"id": "stray"}), "aws")
    envelope = {"Type": "Notification", "Message": json.dumps({"id": "m0"})}
    ledger.processed("r", json.dumps(envelope), "aws")
    report = ledger.report("q", {f"m{i}" for i in range(6)})
    assert report.lost == ["m4"]
    assert report.duplicated == {"m3": 2}
    assert report.unexpected == ["stray"]
    assert report.order_violations == ["g:1(nats) after 2(nats)"]
    assert not report.clean and "LOST 1" in report.line()
    assert ledger.report("r", {"m0"}).clean
    assert order_violations([]) == []


def test_expected_shares_follow_sns_filtering(aws: AwsEndpoint) -> None:
    """The expectation is SNS's: numeric on a Number attribute, exact, MessageBody, unfiltered;
    queues fed directly get everything sent to them."""
    estate = Estate(aws)
    estate.seed()
    ledger = Ledger()
    messages = [make_message(estate, "orders", n, "aws") for n in range(6)]
    messages += [make_message(estate, "alerts", n, "nats") for n in range(3)]
    messages += [make_message(estate, FIFO, n, "aws") for n in range(3)]
    for message in messages:
        ledger.published(message)
    want = estate.expected(ledger)
    amounts = {m.id: int(m.attributes["amount"][1]) for m in messages if m.target == "orders"}
    assert want["orders-big"] == {i for i, a in amounts.items() if a >= 100}
    assert want["orders-eu"] == {"orders-aws-00000", "orders-aws-00003"}
    assert want["orders-vip"] == {"orders-aws-00000", "orders-aws-00003"}
    assert want["orders-all"] == set(amounts)
    assert want["alerts-pager"] == {"alerts-nats-00000"}
    assert len(want["alerts-ops"]) == 3 and len(want[FIFO]) == 3
    assert not want["jobs"]
    assert list(itertools.chain(GROUPS)) == ["g1", "g2", "g3"]
