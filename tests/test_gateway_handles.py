"""Receipt handles and SQS's checksums: pure functions, checked without a server."""

from __future__ import annotations

import hashlib

import pytest

from snsq2nats.bridge.codec import Attribute
from snsq2nats.gateway.checksums import md5_of_attributes, md5_of_body
from snsq2nats.gateway.handles import HANDLE_LIFETIME, ExpiredHandle, HandleSigner, InvalidHandle

REPLY = "$JS.ACK.sqs_orders.orders.1.42.17.1796580829892909363.3"


def test_a_handle_works_on_every_replica_sharing_the_secret() -> None:
    handle = HandleSigner("shared").issue("123456789012/orders", REPLY, now=1000.0)
    receipt = HandleSigner("shared").open(handle, "123456789012/orders", now=1001.0)
    assert receipt.reply == REPLY
    assert (receipt.stream_sequence, receipt.delivered) == (42, 1)


@pytest.mark.parametrize(
    "opener, queue",
    [
        (HandleSigner("another secret"), "123456789012/orders"),
        (HandleSigner(None), "123456789012/orders"),
        (HandleSigner("shared"), "123456789012/payments"),
    ],
    ids=["other secret", "random secret", "other queue"],
)
def test_a_handle_is_refused_elsewhere(opener: HandleSigner, queue: str) -> None:
    handle = HandleSigner("shared").issue("123456789012/orders", REPLY, now=1000.0)
    with pytest.raises(InvalidHandle):
        opener.open(handle, queue, now=1001.0)


@pytest.mark.parametrize("handle", ["", "forged", "a.b", "a.b.c", "AAAA.AAAA", "€.€"])
def test_made_up_handles_are_invalid(handle: str) -> None:
    with pytest.raises(InvalidHandle):
        HandleSigner("shared").open(handle, "123456789012/orders")


def test_a_tampered_handle_is_invalid() -> None:
    signer = HandleSigner("shared")
    payload, mac = signer.issue("123456789012/orders", REPLY).split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    with pytest.raises(InvalidHandle):
        signer.open(f"{flipped}.{mac}", "123456789012/orders")


def test_an_old_handle_has_expired() -> None:
    signer = HandleSigner("shared")
    handle = signer.issue("123456789012/orders", REPLY, now=1000.0)
    signer.open(handle, "123456789012/orders", now=1000.0 + HANDLE_LIFETIME - 1)
    with pytest.raises(ExpiredHandle):
        signer.open(handle, "123456789012/orders", now=1000.0 + HANDLE_LIFETIME + 1)


def test_checksums_follow_sqs_encoding() -> None:
    assert md5_of_body("héllo") == hashlib.md5("héllo".encode()).hexdigest()
    assert md5_of_attributes({}) is None
    # Built by hand from the documented encoding: length-prefixed name, type, then a
    # transport byte (1 string/number, 2 binary) and the length-prefixed value; names sorted.
    expected = hashlib.md5(
        b"\x00\x00\x00\x01a\x00\x00\x00\x06Binary\x02\x00\x00\x00\x02\x00\xff"
        b"\x00\x00\x00\x01b\x00\x00\x00\x06Number\x01\x00\x00\x00\x013"
    ).hexdigest()
    attributes = {"b": Attribute("Number", "3"), "a": Attribute("Binary", b"\x00\xff")}
    assert md5_of_attributes(attributes) == expected
