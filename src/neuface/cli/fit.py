"""``neuface fit``: run one annotator (neuface / regress / flamefit / a named variant) on one sequence."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from neuface.errors import NeufaceError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("fit", help="fit FLAME parameters to one sequence with an annotator")
    parser.add_argument("--crops", required=True, help="crops file of the sequence (.h5)")
    parser.add_argument("--landmarks", required=True, help="landmarks file of the sequence (.h5)")
    parser.add_argument("--flame", required=True, help="FLAME-format model (.pkl/.npz)")
    parser.add_argument("--embedding", required=True, help="DECA-format landmark embedding (.npy)")
    parser.add_argument("--annotator", required=True, help="annotator name (neuface, regress, flamefit, variant)")
    parser.add_argument("--settings", default=None,
                        help="JSON object (or @file.json) overriding the annotator's settings; a new name needs "
                             "a 'method'")
    parser.add_argument("--encoder", default=None, help="encoder kind (deca, emoca, builtin); overrides settings")
    parser.add_argument("--encoder-weights", default=None, help="encoder weights file; overrides settings")
    parser.add_argument("--out", required=True, help="output fit file, e.g. results/fits/NAME/SEQ.h5")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (resumed if present and matching)")
    parser.add_argument("--ground-truth", default=None,
                        help="ground truth (.npz of `neuface synth`) of the sequence: the `gt` annotator (method "
                             "groundtruth) writes it as a fit")
    parser.add_argument("--device", default=None, help="cpu | cuda | auto (default: settings, auto)")
    parser.set_defaults(func=_fit)


def _settings_dict(text: str | None) -> dict:
    if not text:
        return {}
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise NeufaceError(f"settings file {path} does not exist")
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NeufaceError(f"--settings is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise NeufaceError("--settings must be a JSON object")
    return value


def _resolved(args: argparse.Namespace):
    from neuface.fitting.config import resolve_annotator

    overrides = _settings_dict(args.settings)
    for key, value in (("encoder", args.encoder), ("encoder_weights", args.encoder_weights),
                       ("device", args.device)):
        if value is not None:
            overrides[key] = value
    return resolve_annotator(args.annotator, overrides)


#: Options that must be equal for fit command lines to run as one batch (per-sequence: crops, landmarks, out,
#: checkpoint).
_SHARED = ("flame", "embedding", "annotator", "settings", "encoder", "encoder_weights", "device")


def fit_many(parsed: list[argparse.Namespace]) -> list[int]:
    """Run several parsed ``neuface fit`` command lines as one :func:`~neuface.fitting.api_batch.run_fits` call
    (a neuface annotator's clips fitted as one batch); one exit code per command line (143 for all on SIGTERM)."""
    from neuface.fitting.api_batch import FitJob, run_fits
    from neuface.fitting.checkpoint import PREEMPTED_EXIT_CODE, Preempted, StopSignal

    first = parsed[0]
    for args in parsed[1:]:
        differ = [k for k in _SHARED if getattr(args, k) != getattr(first, k)]
        if differ:
            raise NeufaceError(f"fit command lines of one batch differ in {', '.join('--' + k for k in differ)}")
    settings = _resolved(first)
    jobs = [FitJob(a.crops, a.landmarks, a.out, a.checkpoint) for a in parsed]
    with StopSignal() as stop:
        try:
            statuses = run_fits(jobs, first.flame, first.embedding, first.annotator, settings, stop=stop)
        except Preempted as exc:
            log.warning("%s; batch checkpoint next to %s", exc, first.checkpoint)
            return [PREEMPTED_EXIT_CODE] * len(parsed)
    for status in statuses:
        if status.warnings:
            log.warning("fit %s: %d warning(s) carried from upstream: %s", status.sequence, len(status.warnings),
                        "; ".join(status.warnings))
    return [0] * len(parsed)


def _fit(args: argparse.Namespace) -> int:
    from neuface.fitting import api
    from neuface.fitting.checkpoint import PREEMPTED_EXIT_CODE, Preempted, StopSignal

    settings = _resolved(args)
    with StopSignal() as stop:
        try:
            # the fit file carries the upstream stages' warnings (partial inputs: truncated video,
            # trimmed/missing/dropped views): run_fit copies them from the crops/landmarks status
            status = api.run_fit(args.crops, args.landmarks, args.flame, args.embedding, args.annotator, settings,
                                 args.out, checkpoint=args.checkpoint, stop=stop,
                                 ground_truth=args.ground_truth)
        except Preempted as exc:
            log.warning("%s; checkpoint at %s", exc, args.checkpoint)
            return PREEMPTED_EXIT_CODE
    if status.warnings:
        log.warning("fit %s: %d warning(s) carried from upstream: %s", status.sequence, len(status.warnings),
                    "; ".join(status.warnings))
    return 0
