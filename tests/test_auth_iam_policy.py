"""The IAM evaluator, case by case (tests/data/auth/iam_cases.yaml): wildcards, NotAction and
NotResource, explicit Deny, permission boundaries, and what is reported as approximate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from snsq2nats.auth.iam_policy import glob_match, right_decision
from snsq2nats.aws.iam import Principal, authorization_from_pages, parse_policy

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "data" / "auth" / "iam_cases.yaml").read_text()
)["cases"]


def principal(case: dict[str, Any]) -> Principal:
    policies = tuple(parse_policy(f"policy{i}", doc) for i, doc in enumerate(case["policies"]))
    boundary = case.get("boundary")
    return Principal(
        arn="arn:aws:iam::123456789012:role/worker",
        kind="role",
        name="worker",
        policies=policies,
        boundary=parse_policy("edge", boundary) if boundary is not None else None,
        missing=tuple(case.get("missing") or ()),
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_iam_evaluation_case(case: dict[str, Any]) -> None:
    decision = right_decision(principal(case), case["right"], case["resource"])
    assert decision.allowed is case["allowed"], decision.notes
    if "notes" in case:
        assert len(decision.notes) == len(case["notes"]), decision.notes
        for words, note in zip(case["notes"], decision.notes, strict=True):
            assert all(w in note for w in words), (words, note)


def test_wildcards_span_separators_and_escape_the_rest() -> None:
    assert glob_match("arn:aws:sqs:*", "arn:aws:sqs:us-east-1:1:q/x")
    assert not glob_match("arn:aws:sqs:us-east-1:1:a.c", "arn:aws:sqs:us-east-1:1:abc")
    assert glob_match("SQS:Send*", "sqs:SendMessage", case_sensitive=False)


def test_details_pages_give_users_their_groups_policies_and_url_encoded_documents() -> None:
    """GetAccountAuthorizationDetails as botocore may hand it over: documents decoded or still
    URL-encoded JSON, the managed policy's default version, a user's groups."""
    send = '{"Statement": {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}}'
    pages: list[dict[str, Any]] = [
        {
            "UserDetailList": [
                {
                    "UserName": "ops",
                    "Arn": "arn:aws:iam::123456789012:user/ops",
                    "GroupList": ["senders"],
                    "AttachedManagedPolicies": [],
                    "PermissionsBoundary": {
                        "PermissionsBoundaryArn": "arn:aws:iam::123456789012:policy/edge"
                    },
                }
            ],
            "GroupDetailList": [
                {
                    "GroupName": "senders",
                    "GroupPolicyList": [
                        {"PolicyName": "send", "PolicyDocument": send.replace(" ", "%20")}
                    ],
                    "AttachedManagedPolicies": [
                        {"PolicyArn": "arn:aws:iam::aws:policy/NotFetched"}
                    ],
                }
            ],
        },
        {
            "Policies": [
                {
                    "PolicyName": "edge",
                    "Arn": "arn:aws:iam::123456789012:policy/edge",
                    "PolicyVersionList": [
                        {"IsDefaultVersion": False, "Document": {"Statement": []}},
                        {
                            "IsDefaultVersion": True,
                            "Document": {
                                "Statement": [
                                    {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}
                                ]
                            },
                        },
                    ],
                }
            ]
        },
    ]
    (ops,) = authorization_from_pages(pages).principals
    assert ops.kind == "user" and ops.name == "ops" and ops.account == "123456789012"
    assert [p.name for p in ops.policies] == ["inline group senders policy send"]
    assert ops.policies[0].statements[0].actions == ("sqs:SendMessage",)
    assert ops.boundary is not None and ops.boundary.statements[0].actions == ("sqs:*",)
    # An AWS managed policy without a client to read it: reported, and nothing granted.
    assert ops.missing and "NotFetched" in ops.missing[0]
    decision = right_decision(ops, "send", "arn:aws:sqs:us-east-1:123456789012:q")
    assert not decision.allowed and "NotFetched" in decision.notes[0]
