"""Mapping rules: the shipped defaults (`mappings/default.yaml`) plus users' `--mapping` files.

Files merge in order, later files winning: `defaults`, `naming` and `accounts` key by key
(account aliases one by one), `overrides` appended so a later override applies after an
earlier one. Every key is validated; a typo is an error naming the file, the key path and what
is allowed, never a silently ignored setting.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from snsq2nats.errors import MappingError
from snsq2nats.plan.names import NAME_RE

# A wheel ships the defaults inside the package (pyproject force-include); a source checkout
# reads them from the repository's mappings/ directory.
PACKAGED_RULES_FILE = Path(__file__).resolve().parents[1] / "default_mapping.yaml"
REPO_RULES_FILE = Path(__file__).resolve().parents[2] / "mappings" / "default.yaml"


def default_rules_file() -> Path:
    """The shipped defaults: the packaged copy first, then the repository's."""
    return PACKAGED_RULES_FILE if PACKAGED_RULES_FILE.is_file() else REPO_RULES_FILE


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def _seconds(value: Any) -> Any:
    """`90`, `"90s"`, `"5m"`, `"24h"`, `"7d"` → seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 5m, 24h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative: a duration is 0 or more")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration: use e.g. 30s, 5m, 24h or 7d")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _bytes(value: Any) -> Any:
    """`1048576`, `"256KiB"`, `"1GB"` → bytes (int); -1 means unlimited."""
    if isinstance(value, bool):
        raise ValueError("a size such as 1MiB or 10GB")
    if isinstance(value, int):
        if value < -1:
            raise ValueError(f"{value} is not a size: use bytes, or -1 for unlimited")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size: use e.g. 1048576, 256KiB, 1GB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


Seconds = Annotated[float, BeforeValidator(_seconds)]
Bytes = Annotated[int, BeforeValidator(_bytes)]
Side = Literal["aws", "nats"]
MAX_PARTITIONS = 1024
"""One durable per partition: more than this is a mistake, not a throughput setting."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Placement(Strict):
    cluster: str | None = None
    tags: list[str] | None = None


class Limits(Strict):
    max_age: Seconds | None = None
    max_bytes: Bytes | None = None
    max_msgs: int | None = None
    max_msg_size: Bytes | None = None


class Monitor(Strict):
    """SQS-alarm-like thresholds written as `io.nats.monitor.*` metadata, which
    `nats server check consumer|stream` and `nats audit` read."""

    enabled: bool = False
    unprocessed_critical: int = Field(default=1000, ge=1)
    """Messages waiting for a worker (CloudWatch's ApproximateNumberOfMessagesVisible alarm)."""
    redelivery_critical: int = Field(default=100, ge=1)
    """Messages being retried right now; a queue with a redrive policy retries each at most
    maxReceiveCount times before the DLQ mover takes it."""
    source_lag_critical: int = Field(default=1000, ge=1)
    """Messages a topic-fed queue's stream source may lag behind the topic."""


class Defaults(Strict):
    storage: Literal["file", "memory"] = "file"
    replicas: int = Field(default=1, ge=1, le=5)
    placement: Placement | None = None
    duplicate_window: Seconds = 300.0
    topic_retention: Seconds = 86400.0
    max_ack_pending: int = Field(default=1000, ge=1)
    fifo_max_ack_pending: int = Field(default=1, ge=1)
    fifo_partitions: int = Field(default=1, ge=1, le=MAX_PARTITIONS, strict=True)
    """Partitions of every FIFO queue an override does not set `partitions` for."""
    max_promoted_attributes: int = Field(default=3, ge=0, le=8)
    min_ack_wait: Seconds = 1.0
    monitor: Monitor = Field(default_factory=lambda: Monitor())


class Naming(Strict):
    queue_stream: str = "sqs_{name}"
    fifo_queue_stream: str = "sqsfifo_{name}"
    topic_stream: str = "sns_{name}"
    fifo_topic_stream: str = "snsfifo_{name}"
    queue_consumer: str = "{name}"
    queue_subject: str = "sqs.{name}"
    fifo_queue_subject: str = "sqsfifo.{name}"
    topic_subject: str = "sns.{name}"
    fifo_topic_subject: str = "snsfifo.{name}"


AccountNaming = Literal["merge", "prefix"]
NatsAccounts = Literal["one", "per-account"]


class Accounts(Strict):
    """How AWS accounts show in NATS names when an estate spans several."""

    naming: AccountNaming = "merge"
    """`merge`: names as if one account, and two resources that would share a name are an
    error; `prefix`: every stream, subject and queue consumer starts with the account's alias
    (or its ID), so same-named resources of different accounts stay apart."""
    aliases: dict[str, str] = Field(default_factory=dict)
    """Account ID → the word its names start with under `prefix` (default: the ID)."""
    nats: NatsAccounts = "one"
    """`one`: every stream and consumer in one NATS account; `per-account`: each in the NATS
    account named after its AWS account's alias (or ID), a topic fanning out to another
    account's queue crossing by an export in one and an import in the other (plan/accounts)."""

    @field_validator("aliases")
    @classmethod
    def _valid_aliases(cls, value: dict[str, str]) -> dict[str, str]:
        for account, alias in value.items():
            if not re.fullmatch(r"\d{12}", str(account)):
                raise ValueError(f"{account!r} is not an AWS account ID (12 digits)")
            if not NAME_RE.match(alias) or len(alias) > 64:
                raise ValueError(
                    f"alias {alias!r} of {account} must use only letters, digits, '_' and '-' "
                    "(at most 64 characters)"
                )
        if len(set(value.values())) != len(value):
            raise ValueError("two accounts have the same alias: names would collide")
        return value

    def label(self, account: str) -> str:
        return self.aliases.get(account, account)

    def naming_for(self, naming: Naming, account: str) -> Naming:
        """The naming templates of one account's resources: as given under `merge`, else with
        the account's label in front (`<label>_` on names, `<label>.` on subjects)."""
        if self.naming == "merge":
            return naming
        label = self.label(account)
        prefixed = {
            key: f"{label}.{value}" if key.endswith("_subject") else f"{label}_{value}"
            for key, value in naming.model_dump().items()
        }
        return Naming.model_validate(prefixed)


def _accounts_shorthand(value: Any) -> Any:
    """`accounts: prefix` is `accounts: {naming: prefix}`; an empty section is the default."""
    if value is None:
        return {}
    return {"naming": value} if isinstance(value, str) else value


class Cutover(Strict):
    """Where a resource's producers and consumers live right now."""

    producers: Literal["aws", "nats", "both"] = "aws"
    consumers: Side = "aws"
    finished: bool = False
    """Both sides are on NATS and `snsq2nats cutover finish` retired the bridge's paths."""


class Override(Strict):
    match: str = Field(description="name or ARN glob")
    exclude: bool = False
    rename: str | None = None
    replicas: int | None = Field(default=None, ge=1, le=5)
    storage: Literal["file", "memory"] | None = None
    placement: Placement | None = None
    promote: list[str] | None = None
    subjects: list[str] | None = None
    limits: Limits | None = None
    cutover: Cutover | None = None
    monitor: Monitor | None = None
    partitions: int | None = Field(default=None, ge=1, le=MAX_PARTITIONS, strict=True)
    """FIFO queues only: split the message groups over this many durables, each keeping one
    message in flight, so groups run in parallel while each group keeps its order."""

    @field_validator("rename")
    @classmethod
    def _valid_stream_name(cls, value: str | None) -> str | None:
        if value is not None and (not NAME_RE.match(value) or len(value) > 255):
            raise ValueError(
                f"{value!r} is not a valid JetStream stream name: use only letters, digits, "
                "'_' and '-' (no '.', '*', '>', spaces or slashes)"
            )
        return value

    def applies_to(self, name: str, arn: str) -> bool:
        return fnmatch.fnmatchcase(name, self.match) or fnmatch.fnmatchcase(arn, self.match)


def _empty_if_none(value: Any) -> Any:
    """`defaults:` with nothing under it is YAML null: treat it as empty, not as an error."""
    return {} if value is None else value


def _list_if_none(value: Any) -> Any:
    return [] if value is None else value


class RulesFile(Strict):
    version: Literal[1] = 1
    defaults: Annotated[dict[str, Any], BeforeValidator(_empty_if_none)] = Field(
        default_factory=dict
    )
    naming: Annotated[dict[str, Any], BeforeValidator(_empty_if_none)] = Field(default_factory=dict)
    overrides: Annotated[list[dict[str, Any]], BeforeValidator(_list_if_none)] = Field(
        default_factory=list
    )
    accounts: Annotated[dict[str, Any], BeforeValidator(_accounts_shorthand)] = Field(
        default_factory=dict
    )


class Rules(Strict):
    defaults: Defaults = Field(default_factory=lambda: Defaults())
    naming: Naming = Field(default_factory=lambda: Naming())
    accounts: Accounts = Field(default_factory=lambda: Accounts())
    overrides: list[Override] = Field(default_factory=list)

    def resolve(self, name: str, arn: str) -> Override:
        """All overrides matching a resource folded into one, later ones winning per key."""
        merged: dict[str, Any] = {"match": arn}
        for override in self.overrides:
            if override.applies_to(name, arn):
                for key, value in override.model_dump(
                    exclude_unset=True, exclude={"match"}
                ).items():
                    # Nested settings (limits, placement, cutover) merge key by key too, so
                    # `limits: {max_msgs: 10}` does not wipe an earlier `limits: {max_age: 7d}`.
                    if isinstance(value, dict) and isinstance(merged.get(key), dict):
                        merged[key] = {**merged[key], **value}
                    else:
                        merged[key] = value
        return Override.model_validate(merged)


def _allowed(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The keys allowed where an unknown key was found, to put in the error."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return ""
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return ""
    return ", ".join(sorted(current.model_fields)) if current is not None else ""


# What to write instead, for values that are easy to get wrong.
_VALUE_HINTS = {
    "rename": "a stream name uses only letters, digits, '_' and '-', e.g. orders_v2",
    "replicas": "use 1 to 5",
    "storage": "use file or memory",
    "match": "every override needs `match:`, a name or ARN glob",
    "partitions": f"a whole number of partitions from 1 to {MAX_PARTITIONS} (1 = no partitions)",
    "fifo_partitions": f"a whole number of partitions from 1 to {MAX_PARTITIONS}",
    "naming": "use merge or prefix",
}


def _raise(path: str, section: str, model: type[BaseModel], exc: ValidationError) -> NoReturn:
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    key_path = (
        ".".join(str(p) for p in (section, *loc) if p != "")
        if section
        else ".".join(str(p) for p in loc)
    )
    if first["type"] == "extra_forbidden":
        allowed = _allowed(model, loc)
        raise MappingError(
            f"unknown key {loc[-1]!r}",
            where=f"{path}: {key_path}",
            hint=f"allowed keys here: {allowed}" if allowed else "remove it",
        )
    message = str(first["msg"]).removeprefix("Value error, ")
    field_name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    raise MappingError(
        f"invalid value: {message}",
        where=f"{path}: {key_path}",
        hint=_VALUE_HINTS.get(field_name),
    )


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, key: object, first: int, again: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=again)
        self.key, self.first, self.line = key, first, again.line + 1


class _UniqueKeyLoader(yaml.SafeLoader):
    """`safe_load`, except that a key written twice in one mapping is an error: YAML keeps
    the last value silently, so a rule written twice would lose its first half unseen."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges another mapping: not a key of this one
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], key_node.start_mark)
                    seen[key] = key_node.start_mark.line + 1
                except TypeError:
                    continue  # an unhashable key: the base class says why it is refused
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def _read(path: Path) -> RulesFile:
    try:
        # A SafeLoader: plain data only, as safe_load.
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise MappingError(
            "mapping file not found", where=str(path), hint="check the --mapping path"
        ) from None
    except _DuplicateKey as exc:
        raise MappingError(
            f"key {exc.key!r} is written twice in one mapping (first on line {exc.first})",
            where=f"{path}: line {exc.line}",
            hint="YAML would keep only the last one: remove or merge the duplicate",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        where = f"{path}: line {mark.line + 1}" if mark is not None else str(path)
        raise MappingError(
            "mapping file is not valid YAML" + (f" ({problem})" if problem else ""),
            where=where,
            hint="fix the YAML syntax at that line",
        ) from None
    except OSError as exc:
        raise MappingError(f"cannot read mapping file ({exc.strerror})", where=str(path)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise MappingError("a mapping file must be a YAML mapping", where=str(path))
    try:
        rules_file = RulesFile.model_validate(raw)
    except ValidationError as exc:
        _raise(str(path), "", RulesFile, exc)
    try:
        Defaults.model_validate(rules_file.defaults)
    except ValidationError as exc:
        _raise(str(path), "defaults", Defaults, exc)
    try:
        Naming.model_validate(rules_file.naming)
    except ValidationError as exc:
        _raise(str(path), "naming", Naming, exc)
    try:
        Accounts.model_validate(rules_file.accounts)
    except ValidationError as exc:
        _raise(str(path), "accounts", Accounts, exc)
    for index, override in enumerate(rules_file.overrides):
        try:
            Override.model_validate(override)
        except ValidationError as exc:
            _raise(str(path), f"overrides.{index}", Override, exc)
    return rules_file


def load_rules(paths: list[Path], *, replicas: int | None = None) -> Rules:
    """Shipped defaults, then each user file in order, then command-line settings."""
    defaults: dict[str, Any] = {}
    naming: dict[str, Any] = {}
    overrides: list[dict[str, Any]] = []
    accounts: dict[str, Any] = {}
    for path in [default_rules_file(), *paths]:
        rules_file = _read(path)
        defaults.update(rules_file.defaults)
        naming.update(rules_file.naming)
        overrides.extend(rules_file.overrides)
        # Aliases merge one by one, as the naming templates do.
        aliases = {**accounts.get("aliases", {}), **rules_file.accounts.get("aliases", {})}
        accounts.update(rules_file.accounts)
        if aliases:
            accounts["aliases"] = aliases
    if replicas is not None:
        defaults["replicas"] = replicas
        try:
            Defaults.model_validate(defaults)
        except ValidationError:
            raise MappingError(
                f"--replicas {replicas} is out of range", where="--replicas", hint="use 1 to 5"
            ) from None
    return Rules(
        defaults=Defaults.model_validate(defaults),
        naming=Naming.model_validate(naming),
        overrides=[Override.model_validate(o) for o in overrides],
        accounts=Accounts.model_validate(accounts),
    )
