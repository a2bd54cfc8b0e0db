"""``neuface shard``: run one stage's subcommand for every sequence of a shard, in one process.

Example (what ``rules/shards.smk`` runs; ``{sequence}`` etc. are filled per sequence, see
:class:`neuface.shards.ShardTask`)::

    neuface shard --sheet videos.tsv --shard shard-00003 --shard-size 1000 \\
        --output 'results/crops/{sequence}.h5' --input 'results/frames/{sequence}.h5' \\
        --input 'results/landmarks/{sequence}.h5' --marker results/shards/crops/shard-00003.tsv -- \\
        crops --frames 'results/frames/{sequence}.h5' --landmarks 'results/landmarks/{sequence}.h5' --out '{output}'
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neuface.cli.argtypes import positive_int
from neuface.errors import NeufaceError

log = logging.getLogger(__name__)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "shard", help="run a stage for every sequence of a shard (one job for many sequences)",
        description="Run the subcommand after '--' once per sequence of a shard, in-process, with per-sequence "
                    "failure isolation and resumption (see neuface.shards). Writes a marker TSV, one line per "
                    "sequence.")
    parser.add_argument("--sheet", required=True, help="sample sheet (TSV) of the whole run")
    parser.add_argument("--shard", required=True, help="shard id, e.g. shard-00003")
    parser.add_argument("--shard-size", required=True, type=positive_int, help="sequences per shard")
    parser.add_argument("--output", required=True, help="per-sequence output template, e.g. 'results/x/{sequence}.h5'")
    parser.add_argument("--input", action="append", default=[],
                        help="per-sequence input template that must exist (repeatable)")
    parser.add_argument("--sheet-inputs", action="store_true",
                        help="the sequence's sheet paths (videos, ground truth) are inputs too (freshness only)")
    parser.add_argument("--marker", required=True, help="marker TSV to write (the job's output)")
    parser.add_argument("--max-crash-fraction", type=_fraction, default=0.05,
                        help="fail the shard (no marker, so it is retried) if more than this fraction of its "
                             "sequences fail (default 0.05)")
    parser.add_argument("--batch", type=positive_int, default=1,
                        help="run the sequences K at a time as one batch where the subcommand supports it "
                             "('fit' with a neuface annotator: K clips fitted as one batched computation); "
                             "default 1")
    parser.add_argument("--fingerprint-extra", default="",
                        help="a value the sequences' results depend on beyond their command line (e.g. the hash of "
                             "the resolved fit settings); a change redoes them instead of reusing the journal")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SUBCOMMAND ARGS... (with placeholders)")
    parser.set_defaults(func=_shard)


def in_process_executor():
    """``execute(argv) -> exit code``: parse ``argv`` with the neuface parser and run it in this process.

    Usage errors (argparse) and :class:`~neuface.errors.NeufaceError` become exit code 2 (logged); any other
    exception propagates (the shard records it as a crash).
    """
    from neuface.cli import build_parser

    parser = build_parser()

    def execute(argv: list[str]) -> int:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse has printed the usage error
            return int(exc.code or 2)
        try:
            return int(args.func(args) or 0)
        except NeufaceError as exc:
            log.error("%s", exc)
            return 2

    return execute


def in_process_batch_executor():
    """``execute_batch(argvs) -> exit codes``: ``fit`` command lines go to one batched fit
    (:func:`neuface.cli.fit.fit_many`); anything else runs one command at a time."""
    from neuface.cli import build_parser
    from neuface.cli.fit import fit_many

    parser, one = build_parser(), in_process_executor()

    def execute_batch(argvs: list[list[str]]) -> list[int]:
        if not all(a[:1] == ["fit"] for a in argvs):
            return [one(a) for a in argvs]
        try:
            parsed = [parser.parse_args(a) for a in argvs]
        except SystemExit:  # a usage error: run them one by one, each records its own
            return [one(a) for a in argvs]
        try:
            return fit_many(parsed)
        except NeufaceError as exc:
            log.error("%s", exc)
            return [2] * len(argvs)

    return execute_batch


def _shard(args: argparse.Namespace) -> int:
    from neuface.shards import ShardTask, run_shard

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise NeufaceError("no subcommand given: put it after '--', e.g. -- crops --frames ... --out '{output}'")
    if command[0] == "shard":
        raise NeufaceError("a shard cannot run 'shard' again")
    task = ShardTask(sheet=Path(args.sheet), shard=args.shard, shard_size=args.shard_size, command=tuple(command),
                     output=args.output, marker=Path(args.marker), inputs=tuple(args.input),
                     sheet_inputs=args.sheet_inputs, max_crash_fraction=args.max_crash_fraction,
                     batch_size=args.batch, fingerprint_extra=args.fingerprint_extra)
    code, _ = run_shard(task, in_process_executor(), in_process_batch_executor() if args.batch > 1 else None)
    return code
