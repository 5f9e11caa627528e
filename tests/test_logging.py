"""`configure_logging`: plain lines off a terminal, one handler however often it is called."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from snsq2nats.console import configure_logging


def test_plain_lines_and_no_stacked_handlers() -> None:
    logger = logging.getLogger("snsq2nats")
    before, level = list(logger.handlers), logger.level
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging(Console(file=first, force_terminal=False))
        configure_logging(Console(file=second, force_terminal=False))
        ours = [h for h in logger.handlers if h.get_name() == "snsq2nats.console"]
        assert len(ours) == 1
        logging.getLogger("snsq2nats.bridge.runtime").info("route a: %s", "running")
        assert first.getvalue() == ""
        assert second.getvalue() == "route a: running\n"
    finally:
        logger.handlers[:] = before
        logger.setLevel(level)


def test_a_terminal_gets_rich_output() -> None:
    from rich.logging import RichHandler

    logger = logging.getLogger("snsq2nats")
    before, level = list(logger.handlers), logger.level
    try:
        configure_logging(Console(file=io.StringIO(), force_terminal=True))
        ours = [h for h in logger.handlers if h.get_name() == "snsq2nats.console"]
        assert len(ours) == 1 and isinstance(ours[0], RichHandler)
    finally:
        logger.handlers[:] = before
        logger.setLevel(level)
