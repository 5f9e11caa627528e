"""Writing the files users keep (inventory, plan, reports): whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from snsq2nats.errors import UsageError


def write_atomic(path: Path, text: str) -> None:
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
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
