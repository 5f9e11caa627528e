"""Batched requests on one inbox against a real nats-server: what `confirm` calls confirmed
must really be acknowledged on the consumer, and anything short of an answer for every
request (a timeout, nobody listening, a deleted consumer) must not count as confirmed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.js.errors import APIError

from snsq2nats.bridge.context import RouteMetrics
from snsq2nats.bridge.pull import ack_confirmed
from snsq2nats.bridge.replies import NoResponders, Replies, check_pub_ack
from tests.fixtures.bridge import PublicApiOnly
from tests.fixtures.wait import until


async def pulled(js: Any, stream: str, count: int) -> list[Any]:
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
    for i in range(count):
        await js.publish(f"{stream.lower()}.x", f"m{i}".encode())
    sub = await js.pull_subscribe(f"{stream.lower()}.>", durable="workers", stream=stream)
    return list(await sub.fetch(count, timeout=5))


async def ack_state(js: Any, stream: str) -> tuple[int, int]:
    info = await js.consumer_info(stream, "workers")
    return int(info.num_ack_pending), int(info.ack_floor.stream_seq)


@pytest.mark.parametrize("client", ["nats-py", "public-api-only"])
async def test_confirm_means_every_ack_was_taken(nc: Any, js: Any, client: str) -> None:
    msgs = await pulled(js, "CONFIRM", 25)
    replies = Replies(nc if client == "nats-py" else PublicApiOnly(nc))
    try:
        assert await replies.confirm([m.reply for m in msgs[:20]], b"+ACK", 5.0)
        assert await ack_state(js, "CONFIRM") == (5, 20)
        # Acknowledging again is answered too: a retry after a short count is harmless.
        assert await replies.confirm([m.reply for m in msgs], b"+ACK", 5.0)
        assert await ack_state(js, "CONFIRM") == (0, 25)
    finally:
        await replies.close()


def count_answers(replies: Replies) -> Any:
    """Count the answers that reach `replies` (wrapped before its subscription is made)."""
    seen: list[str] = []
    original = replies._on_reply

    async def counting(msg: Any) -> None:
        seen.append(msg.subject)
        await original(msg)

    replies._on_reply = counting  # type: ignore[method-assign]
    return lambda: len(seen)


@pytest.mark.parametrize(("client", "answers"), [("nats-py", 1), ("public-api-only", 20)])
async def test_last_only_needs_the_batch_in_one_write(
    nc: Any, js: Any, client: str, answers: int
) -> None:
    """One answer covers a batch only when the batch went out in one write; through the public
    API alone (one publish each) every ack is answered."""
    msgs = await pulled(js, "LAST", 20)
    replies = Replies(nc if client == "nats-py" else PublicApiOnly(nc))
    answered = count_answers(replies)
    try:
        assert await replies.confirm([m.reply for m in msgs], b"+ACK", 5.0, last_only=True)
        assert answered() == answers
        assert await ack_state(js, "LAST") == (0, 20)
    finally:
        await replies.close()


async def test_a_request_nobody_takes_fails_the_batch_at_once(nc: Any, js: Any) -> None:
    msgs = await pulled(js, "NOBODY", 3)
    replies = Replies(nc)
    try:
        subjects = [msgs[0].reply, "no.one.listens", msgs[1].reply]
        # The no-responders status ends the wait: with an hour to wait, the answer still comes
        # (the outer bound only turns a hang into a failure).
        confirming = replies.confirm(subjects, b"+ACK", 3600.0)
        assert not await asyncio.wait_for(confirming, timeout=60)
    finally:
        await replies.close()


async def test_a_missing_answer_is_a_timeout_not_a_confirmation(nc: Any) -> None:
    answered = 0

    async def answer_first_only(msg: Any) -> None:
        nonlocal answered
        answered += 1
        if answered == 1:
            await nc.publish(msg.reply, b"")

    sub = await nc.subscribe("svc.*", cb=answer_first_only)
    replies = Replies(nc)
    try:
        assert not await replies.confirm(["svc.a", "svc.b"], b"x", 0.5)
        assert answered == 2
        # A late answer to the abandoned batch must not leak into the next one.
        answered = 0
        assert not await replies.confirm(["svc.c", "svc.d"], b"x", 0.5)
    finally:
        await sub.unsubscribe()
        await replies.close()


async def test_acks_for_a_deleted_consumer_are_reported_not_assumed(nc: Any, js: Any) -> None:
    msgs = await pulled(js, "GONE", 4)
    await js.delete_consumer("GONE", "workers")
    metrics = RouteMetrics("r", "nats-to-sqs")
    replies = Replies(nc)
    try:
        await ack_confirmed(replies, msgs, metrics, timeout=0.5)
    finally:
        await replies.close()
    assert metrics.errors == 4
    assert not any(m.is_acked for m in msgs)


async def test_confirm_on_a_closed_connection_is_false(nats_url: str) -> None:
    import nats

    conn = await nats.connect(nats_url)
    replies = Replies(conn)
    await replies.start()
    await conn.close()
    assert not await replies.confirm(["a.b"], b"+ACK", 0.5)


async def capture(nc: Any, subject: str) -> tuple[Any, list[Any]]:
    got: list[Any] = []

    async def keep(msg: Any) -> None:
        got.append(msg)

    return await nc.subscribe(subject, cb=keep), got


async def test_send_many_writes_what_publish_would(nc: Any) -> None:
    """Same bytes on the wire as nats-py's publish (names trimmed, values trimmed and CR/LF
    made spaces), in order; a request publish refuses fails alone and keeps its place."""
    headers = [
        {"plain": "v", "Nats-Msg-Id": "id-1"},
        {" padded ": "  spaced  ", "multi": "line\r\nbreak"},
        None,
        {"bad name": "x"},  # a space: nats-py refuses the header name
        {"after": "bad"},
    ]
    sub_raw, raw = await capture(nc, "raw.*")
    sub_ref, ref = await capture(nc, "ref.*")
    replies = Replies(nc)
    try:
        requests = [(f"raw.{i}", f"body-{i}".encode(), h) for i, h in enumerate(headers)]
        out = await replies.send_many(requests)
        assert [isinstance(o, BaseException) for o in out] == [False, False, False, True, False]
        for i, h in enumerate(headers):
            if i != 3:
                await nc.publish(f"ref.{i}", f"body-{i}".encode(), headers=h)
        await until(lambda: len(raw) == 4 and len(ref) == 4, timeout=5)
    finally:
        await sub_raw.unsubscribe()
        await sub_ref.unsubscribe()
        await replies.close()
    assert [m.subject for m in raw] == ["raw.0", "raw.1", "raw.2", "raw.4"]
    for mine, theirs in zip(raw, ref, strict=True):
        assert (mine.data, mine.headers) == (theirs.data, theirs.headers)
        assert mine.reply.startswith(replies.prefix)


async def test_send_many_pub_acks_and_refusals(nc: Any, js: Any) -> None:
    await js.add_stream(name="MANY", subjects=["many.>"], duplicate_window=60)
    replies = Replies(nc)
    try:
        requests = [
            ("many.a", b"1", {"Nats-Msg-Id": "m-1"}),
            ("many.a", b"1 again", {"Nats-Msg-Id": "m-1"}),  # deduplicated, still a PubAck
            ("many.b", b"2", {"Nats-Expected-Stream": "OTHER"}),  # refused by the stream
            ("nostream.c", b"3", None),  # nobody listens
            ("many.big", b"x" * (nc.max_payload + 1), None),  # over the server's limit
        ]
        out = await replies.send_many(requests)
        assert isinstance(out[4], BaseException)
        answers = await replies.gather([f for f in out[:4] if isinstance(f, asyncio.Future)], 5)
    finally:
        await replies.close()
    check_pub_ack(answers[0])
    check_pub_ack(answers[1])
    with pytest.raises(APIError):
        check_pub_ack(answers[2])
    with pytest.raises(NoResponders):
        check_pub_ack(answers[3])
    info = await js.stream_info("MANY")
    assert info.state.messages == 1
