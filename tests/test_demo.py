"""`make demo` end to end: the whole story on embedded moto and nats-server must keep working."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from snsq2nats.cli import main
from snsq2nats.plan.model import load_plan
from tests.fixtures.aws import AwsEndpoint


@pytest.mark.slow
def test_demo_tells_the_whole_story(
    tmp_path: Path, aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as `make demo` runs it: a relative `--dir` (the default's form, `.demo`), from the
    directory the user is in. nats-server and the contexts live elsewhere, so a relative path
    handed to them named nothing (`open .demo/tls/server.pem: no such file or directory`)."""
    # moto keeps its state per process: what an earlier test left (here, the shop's topic with
    # a webhook nobody can reach) must not leak into the demo's own embedded AWS.
    sns = aws.client("sns")
    stale = sns.create_topic(Name="orders")["TopicArn"]
    sns.subscribe(TopicArn=stale, Protocol="https", Endpoint="https://unreachable.invalid/x")

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo", "--dir", "demo-out"], catch_exceptions=False)
    out = tmp_path / "demo-out"
    assert result.exit_code == 0, result.stderr[-3000:]
    text = result.stderr
    for step in range(1, 8):
        assert f"[{step}/7]" in text
    assert "verify: " in text and " 0 failed" in text
    assert "all routes drained: safe to switch" in text
    # Filters applied on the way: billing takes placed+cancelled, shipping placed in eu/us,
    # fraud (a numeric policy) amounts >= 1000; the https webhook still gets every order.
    assert "NATS workers of orders-billing: 5 message(s)" in text
    assert "NATS workers of orders-shipping: 3 message(s)" in text
    assert "NATS workers of orders-fraud: 2 message(s)" in text
    assert "NATS workers of payments.fifo: 3 message(s)" in text
    assert "received 6 order(s)" in text
    assert "s3cr3t" not in text
    for name in ("cutover.yaml", "inventory.json", "plan.json", "plan.md", "plan.html"):
        assert (out / name).is_file()
    assert load_plan(out / "plan.json").routes
    # The story runs on a mutual-TLS server whose users `snsq2nats auth` generated: apply and
    # verify as the admin, the bridge as the bridge identity, each queue's workers as its own
    # consumer identity; a refusal anywhere would have failed the demo.
    assert "certificate-mapped users" in text
    assert "snsq2nats-auth.conf" in {p.name for p in (out / "auth").iterdir()}
    assert (out / "auth" / "contexts" / "snsq2nats-bridge.json").is_file()
    assert "permission denied" not in text
    for fmt in ("natscli", "nack", "terraform"):
        assert (out / "export" / fmt / "NOTES.md").is_file()
    assert "<svg" in (out / "plan.html").read_text()
