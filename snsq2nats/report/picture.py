"""The estate as a picture: topics → subscriptions (with their filter policies) → queues →
JetStream streams and consumers, and on which side each resource's producers and consumers
are now. One self-contained SVG (no script, no external asset), embedded in the HTML plan."""

from __future__ import annotations

import html
from dataclasses import dataclass

from snsq2nats.aws.arns import subscription_topic
from snsq2nats.plan.model import Plan, Resource

MAX_ROWS = 150
"""Past this many subscriptions or queues the picture stops drawing and says how many more."""

_COLUMNS = {"topic": 16, "subscription": 296, "queue": 596, "jetstream": 896}
_WIDTH = {"topic": 250, "subscription": 270, "queue": 270, "jetstream": 270}
_ROW = 64
_BOX = 52
_TOP = 44
_SIDE_COLOURS = {"aws": "#ff9900", "nats": "#27aae1", "both": "#8250df"}
_VERDICT_COLOURS = {
    "exact": "#1a7f37",
    "approximate": "#9a6700",
    "emulated": "#8250df",
    "unsupported": "#cf222e",
}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _short(text: str, limit: int = 38) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Box:
    kind: str
    y: int
    title: str
    lines: list[str]
    stripe: str | None = None
    badges: tuple[tuple[str, str], ...] = ()

    @property
    def left(self) -> int:
        return _COLUMNS[self.kind]

    @property
    def right(self) -> int:
        return self.left + _WIDTH[self.kind]

    @property
    def middle(self) -> int:
        return self.y + _BOX // 2

    def svg(self) -> str:
        x, w = self.left, _WIDTH[self.kind]
        parts = [
            f'<g class="{self.kind}">',
            f'<rect x="{x}" y="{self.y}" width="{w}" height="{_BOX}" rx="6" fill="#ffffff" '
            'stroke="#d0d7de"/>',
        ]
        if self.stripe:
            parts.append(
                f'<rect x="{x}" y="{self.y}" width="5" height="{_BOX}" rx="2" '
                f'fill="{self.stripe}"/>'
            )
        title = _e(_short(self.title))
        parts.append(f'<text x="{x + 12}" y="{self.y + 18}" font-weight="600">{title}</text>')
        for i, line in enumerate(self.lines[:2]):
            parts.append(
                f'<text x="{x + 12}" y="{self.y + 33 + 13 * i}" class="small">'
                f"{_e(_short(line, 44))}</text>"
            )
        bx = x + w - 8
        for label, side in reversed(self.badges):
            text = f"{label} {side.upper()}"
            width = 7 * len(text) + 10
            bx -= width
            parts.append(
                f'<rect x="{bx}" y="{self.y + 6}" width="{width}" height="16" rx="8" '
                f'fill="{_SIDE_COLOURS[side]}"/>'
                f'<text x="{bx + 5}" y="{self.y + 18}" class="badge">{_e(text)}</text>'
            )
            bx -= 4
        parts.append("</g>")
        return "".join(parts)


def _edge(a: _Box, b: _Box, dashed: bool = False) -> str:
    x1, y1, x2, y2 = a.right, a.middle, b.left, b.middle
    mid = (x1 + x2) // 2
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    return (
        f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" '
        f'stroke="#8c959f" stroke-width="1.5"{dash}/>'
    )


def _filter_text(sub: Resource) -> str:
    policy = next((f for f in sub.fidelity if f.attribute == "FilterPolicy"), None)
    if policy is None or not policy.value:
        return "no filter policy"
    return f"filter {policy.value}"


def _worst(sub: Resource) -> str:
    return _VERDICT_COLOURS[sub.worst_verdict]


def estate_svg(plan: Plan) -> str:
    topics = sorted((r for r in plan.resources if r.kind == "sns-topic"), key=lambda r: r.name)
    queues = {r.stream: r for r in plan.resources if r.kind == "sqs-queue" and r.stream}
    subs = [r for r in plan.resources if r.kind == "sns-subscription"]
    by_topic: dict[str, list[Resource]] = {}
    for sub in subs:
        by_topic.setdefault(subscription_topic(sub.source_arn), []).append(sub)

    boxes: list[_Box] = []
    edges: list[str] = []
    queue_boxes: dict[str, _Box] = {}
    queue_order: list[str] = []
    sub_rows = 0
    topic_y = _TOP
    left_out = 0

    def queue_box(stream: str) -> _Box:
        if stream not in queue_boxes:
            queue = queues[stream]
            y = _TOP + len(queue_order) * _ROW
            badges = [("P", queue.producers or "aws"), ("C", queue.consumers or "aws")]
            box = _Box(
                "queue",
                y,
                queue.name,
                [f"SQS queue · worst verdict {queue.worst_verdict}"],
                _worst(queue),
                tuple(badges),
            )
            queue_boxes[stream] = box
            queue_order.append(stream)
            js = _Box(
                "jetstream",
                y,
                stream,
                [f"durable {queue.consumer}", f"subject {queue.publish_subject or ''}"],
                "#27aae1",
            )
            boxes.extend([box, js])
            edges.append(_edge(box, js))
        return queue_boxes[stream]

    for topic in topics:
        own = sorted(by_topic.get(topic.source_arn, []), key=lambda r: r.name)
        if sub_rows + len(own) > MAX_ROWS:
            left_out += len(own)
            continue
        height = max(1, len(own))
        y = max(topic_y, _TOP + sub_rows * _ROW)
        stream_line = f"stream {topic.stream}" if topic.stream else "no stream (nothing durable)"
        tbox = _Box(
            "topic",
            y,
            topic.name,
            [f"SNS topic · {stream_line}"],
            _worst(topic),
            (("P", topic.producers or "aws"),),
        )
        boxes.append(tbox)
        for i, sub in enumerate(own):
            sy = _TOP + (sub_rows + i) * _ROW
            target = sub.name.split(" → ", 1)[-1]
            sbox = _Box("subscription", sy, f"→ {target}", [_filter_text(sub)], _worst(sub))
            boxes.append(sbox)
            edges.append(_edge(tbox, sbox))
            if sub.stream and sub.stream in queues:
                edges.append(_edge(sbox, queue_box(sub.stream)))
        sub_rows += height
        topic_y = _TOP + sub_rows * _ROW
    for stream in sorted(queues, key=lambda s: queues[s].name):
        if stream in queue_boxes:
            continue
        if len(queue_order) >= MAX_ROWS:
            left_out += 1
            continue
        queue_box(stream)

    rows = max(sub_rows, len(queue_order), 1)
    height = _TOP + rows * _ROW + 36
    width = _COLUMNS["jetstream"] + _WIDTH["jetstream"] + 16
    headings = "".join(
        f'<text x="{_COLUMNS[k]}" y="24" class="heading">{_e(t)}</text>'
        for k, t in (
            ("topic", "SNS topics"),
            ("subscription", "subscriptions"),
            ("queue", "SQS queues"),
            ("jetstream", "JetStream streams / consumers"),
        )
    )
    legend = (
        f'<text x="16" y="{height - 12}" class="small">P = producers, C = consumers, now on '
        "AWS (orange), NATS (blue) or both (purple); the stripe is the worst fidelity verdict"
        + (f"; {left_out} more not drawn" if left_out else "")
        + "</text>"
    )
    style = (
        "<style>text{font:13px -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;"
        "fill:#1f2328}.small{font-size:11px;fill:#57606a}.heading{font-weight:600;"
        "fill:#57606a}.badge{font-size:10px;font-weight:600;fill:#ffffff}</style>"
    )
    return (
        # Scales to the page's width; the viewBox keeps the proportions.
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="estate picture">'
        f"{style}{headings}{''.join(edges)}{''.join(b.svg() for b in boxes)}{legend}</svg>"
    )
