"""The ``neuface`` command line: one entry point whose subcommands are the workflow's rules.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``; the parser sets
``func`` to a callable taking the parsed namespace and returning an exit code. ``main(argv)`` is what tests
call; user errors (:class:`neuface.errors.NeufaceError`) become one ``ERROR`` log line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from neuface import __version__
from neuface.errors import NeufaceError
from neuface.logs import setup_logging

log = logging.getLogger("neuface")

#: Subcommand modules, in the order they appear in ``neuface --help``.
COMMAND_MODULES = (
    "index", "frames", "landmarks", "crops", "kit", "synth", "demo", "assets", "encoder", "fit",
    "filter", "pack", "h5", "metrics", "gtlandmarks", "report", "render", "summary", "shard",
    "train", "regressor_eval", "prior", "train_report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuface", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"neuface {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeat for more)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--log-file", default=None, help="also append log lines to this file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"neuface.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging(-1 if args.quiet else args.verbose, args.log_file)
    try:
        return int(args.func(args) or 0)
    except NeufaceError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
