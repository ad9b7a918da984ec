"""Logging set-up shared by every process."""

from __future__ import annotations

import logging


def configure(level: str) -> None:
    """One line per record on stderr: time, level, logger, message. Idempotent."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("bytewax").setLevel(max(logging.getLevelName(level), logging.INFO))
