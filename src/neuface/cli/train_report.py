"""``neuface train-report``: Table 4 / Table 5 analogues (CSV, Markdown, LaTeX) from the training evaluations.

``neuface train-report --regressor-evals results/train/eval/regressor/*.json --out results/report`` writes
``table5.{csv,md,tex}``; ``--prior-evals results/train/eval/motion_prior/*.json`` writes ``table4.*``.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train-report", help="Table 4/5-style tables from regressor and motion-prior evaluations")
    parser.add_argument("--regressor-evals", nargs="*", default=[],
                        help="`neuface eval-regressor` JSONs, one row each, in order -> table5.*")
    parser.add_argument("--prior-evals", nargs="*", default=[],
                        help="`neuface prior eval` JSONs, one row each, in order -> table4.*")
    parser.add_argument("--out", required=True, help="output directory (results/report)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from neuface.report.train_tables import build_train_tables

    for path in build_train_tables(args.regressor_evals, args.prior_evals, args.out):
        log.info("wrote %s", path)
    return 0
