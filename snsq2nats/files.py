"""The files users keep (inventory, plan, reports): written whole or not at all, read strictly."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from snsq2nats.errors import InventoryFileError, UsageError


def write_atomic(path: Path, text: str | bytes) -> None:
    """A crash or a full disk never leaves a truncated file under the final name."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(
            f"cannot write file ({exc.strerror})",
            where=str(path),
            hint="check the directory exists and is writable",
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            # Encoded here at once, not whole: a 10,000-queue plan is 70 MB.
            if isinstance(text, bytes):
                handle.write(text)
            else:
                for start in range(0, len(text), _CHUNK):
                    handle.write(text[start : start + _CHUNK].encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


M = TypeVar("M", bound=BaseModel)
_CHUNK = 1 << 20


def document_json(doc: BaseModel) -> bytes:
    """A document's file text (`model_dump_json(indent=2)` and a newline), as UTF-8 bytes
    straight from the serializer: no str copy of a 70 MB plan."""
    return doc.__pydantic_serializer__.to_json(doc, indent=2) + b"\n"


def read_document(path: Path, model: type[M], *, what: str, remedy: str, version: int) -> M:
    """Read a versioned JSON document snsq2nats wrote (inventory, plan).

    Every way the file can be wrong (missing, truncated, another tool's, another version, a
    damaged field) becomes one error naming the file and what to do.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InventoryFileError(f"{what} file not found", where=str(path), hint=remedy) from None
    except OSError as exc:
        raise InventoryFileError(
            f"cannot read {what} file ({exc.strerror})", where=str(path)
        ) from None
    # Straight from JSON into the model: a 10,000-queue plan is 70 MB of JSON and three times
    # that as the dicts json.loads builds, which the model would then hold a second time.
    # Anything wrong falls through to the step-by-step path below, which says what it is.
    try:
        doc = model.model_validate_json(data)
    except ValidationError:
        pass
    else:
        if "format_version" in doc.model_fields_set and (
            getattr(doc, "format_version", None) == version
        ):
            return doc
    text = data.decode("utf-8")
    del data
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryFileError(
            f"{what} file is not valid JSON ({exc.msg} at line {exc.lineno})",
            where=str(path),
            hint=f"the file may be damaged or truncated: {remedy}",
        ) from None
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise InventoryFileError(
            f"not a snsq2nats {what} (no format_version)", where=str(path), hint=remedy
        )
    if raw["format_version"] != version:
        raise InventoryFileError(
            f"{what} format_version {raw['format_version']!r} is not supported "
            f"(this snsq2nats reads {version})",
            where=str(path),
            hint=remedy,
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InventoryFileError(
            f"invalid {what}: {first['msg']}", where=f"{path}: {loc}", hint=remedy
        ) from None
