"""Output.data: what scripts read on stdout."""

from __future__ import annotations

import io
import json

from snsq2nats.console import Output


def test_data_serialises_json_values_and_writes_text_as_it_is() -> None:
    stdout = io.StringIO()
    out = Output(err=io.StringIO(), out=stdout)
    out.data({"queue": "commandes-é", "counts": [1, 2]})
    out.data("plain line")
    first, second = stdout.getvalue().split("}\n")
    assert json.loads(first + "}") == {"queue": "commandes-é", "counts": [1, 2]}
    assert '"commandes-é"' in first, "non-ASCII is kept, not escaped"
    assert first.startswith('{\n  "queue"'), "indented for people reading it too"
    assert second == "plain line\n"


def test_the_package_ships_its_type_information() -> None:
    """`py.typed` (PEP 561): a project importing snsq2nats type-checks against its hints."""
    from importlib.resources import files

    assert files("snsq2nats").joinpath("py.typed").is_file()
