"""Logging set-up shared by the CLI and the workflow rules (one format, level from -v/-q)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(verbosity: int = 0, log_file: str | None = None) -> None:
    """Configure the root logger. ``verbosity`` 0 → INFO, ≥1 → DEBUG, <0 → WARNING."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
