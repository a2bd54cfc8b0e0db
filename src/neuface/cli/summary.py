"""``neuface summary RESULTS``: what a workflow run produced, stage by stage, and the verdict — complete, complete
with failed sequences, or incomplete (used at the end of make demo; it exits 0 whatever the verdict)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neuface.errors import NeufaceError

log = logging.getLogger(__name__)

_SKIP_DIRS = {"logs", "benchmarks"}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("summary", help="list the outputs of a workflow run by stage")
    parser.add_argument("results", help="the workflow's results directory")
    parser.add_argument("--snakemake-exit", type=int, default=None, metavar="CODE",
                        help="snakemake's exit status, when the caller has it (make demo): non-zero makes the run "
                        "incomplete")
    parser.set_defaults(func=_summary)


def collect_outputs(results: Path) -> dict[str, list[Path]]:
    """Map each stage directory under ``results`` to its output files (logs/benchmarks excluded)."""
    if not results.is_dir():
        raise NeufaceError(f"results directory {results} does not exist; run the workflow first")
    stages: dict[str, list[Path]] = {}
    for stage_dir in sorted(p for p in results.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS):
        files = sorted(p for p in stage_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        if files:
            stages[stage_dir.name] = files
    return stages


def _summary(args: argparse.Namespace) -> int:
    results = Path(args.results)
    stages = collect_outputs(results)
    if not stages:
        raise NeufaceError(f"no outputs under {results}")
    log.info("outputs under %s:", results.resolve())
    for stage, files in stages.items():
        log.info("  %-12s %d file(s), e.g. %s", stage, len(files), files[0])
    _shard_summary(results / "shards")
    log.info("logs: %s   benchmarks: %s", results / "logs", results / "benchmarks")
    _print_verdict(results, args.snakemake_exit)
    return 0


def _print_verdict(results: Path, snakemake_exit: int | None) -> None:
    """The verdict last, framed, at WARNING level unless everything is complete (exit status stays 0)."""
    from neuface.run_verdict import COMPLETE, run_verdict

    verdict = run_verdict(results, snakemake_exit)
    level = logging.INFO if verdict.state == COMPLETE else logging.WARNING
    for line in verdict.lines:
        log.log(logging.WARNING if line.startswith(("FAILED", "...")) else logging.INFO, "  %s", line)
    for problem in verdict.problems:
        log.warning("  incomplete: %s", problem)
    rule = "=" * min(100, max(40, len(verdict.headline)))
    log.log(level, "%s", rule)
    log.log(level, "%s", verdict.headline)
    log.log(level, "%s", rule)


def _shard_summary(shards_dir: Path, shown: int = 5) -> None:
    """Per sharded stage: sequences by outcome, and the first failed ones (all of them are in the markers)."""
    from neuface.shards import marker_summary

    for stage, entry in marker_summary(shards_dir).items():
        counts = ", ".join(f"{n} {status}" for status, n in entry["counts"].items() if n)
        log.info("  shards/%-12s %d shard(s): %s", stage, entry["shards"], counts)
        for sequence, status, message in entry["failed"][:shown]:
            log.warning("    %s %s: %s", sequence, status, message)
        if len(entry["failed"]) > shown:
            log.warning("    ... %d more: see the markers under %s", len(entry["failed"]) - shown, shards_dir / stage)
