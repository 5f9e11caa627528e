"""What every resource kind's translation reads: the rules, the server, the names taken so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from snsq2nats.inventory import Queue, Topic
from snsq2nats.jetstream.spec import Placement, version_tuple
from snsq2nats.plan.names import NameRegistry, base_name, check_name, check_subject, render
from snsq2nats.plan.rules import Defaults, Naming, Override, Rules


@dataclass(frozen=True)
class ResourceNames:
    """A queue's or topic's stream name and subject, from the naming templates and overrides."""

    stream: str
    subject: str
    base: str
    """The AWS name without `.fifo`."""
    fifo: bool


@dataclass
class Context:
    rules: Rules
    server_version: str | None
    streams: NameRegistry = field(default_factory=lambda: NameRegistry("stream"))
    subjects: NameRegistry = field(default_factory=lambda: NameRegistry("subject"))

    @property
    def defaults(self) -> Defaults:
        return self.rules.defaults

    @property
    def naming(self) -> Naming:
        return self.rules.naming

    def names(
        self, resource: Queue | Topic, override: Override, kind: Literal["queue", "topic"]
    ) -> ResourceNames:
        """The names of a queue or topic, its subject claimed (two sources never share one).

        The stream name is claimed by the caller when the stream is really created: a topic
        may need none.
        """
        base, fifo = base_name(resource.name)
        fill = {"name": base, "region": resource.region, "account": resource.account}
        stream_key = f"{'fifo_' if fifo else ''}{kind}_stream"
        subject_key = f"{'fifo_' if fifo else ''}{kind}_subject"
        stream = render(getattr(self.naming, stream_key), where=f"naming.{stream_key}", **fill)
        stream = check_name(override.rename or stream, what="stream", source=resource.arn)
        subject = render(getattr(self.naming, subject_key), where=f"naming.{subject_key}", **fill)
        check_subject(subject, source=resource.arn)
        self.subjects.claim(subject, resource.arn)
        return ResourceNames(stream=stream, subject=subject, base=base, fifo=fifo)

    def placement(self, override: Override) -> Placement | None:
        chosen = override.placement or self.defaults.placement
        if chosen is None:
            return None
        return Placement(cluster=chosen.cluster, tags=chosen.tags)

    def schedules_supported(self) -> bool | None:
        """Message schedules need nats-server 2.12; None when the version is unknown."""
        parsed = version_tuple(self.server_version)
        return None if parsed is None else parsed[:2] >= (2, 12)
