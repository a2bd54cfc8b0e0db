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


def _fit(args: argparse.Namespace) -> int:
    from neuface.fitting import api
    from neuface.fitting.checkpoint import PREEMPTED_EXIT_CODE, Preempted, StopSignal
    from neuface.fitting.config import resolve_annotator

    overrides = _settings_dict(args.settings)
    for key, value in (("encoder", args.encoder), ("encoder_weights", args.encoder_weights),
                       ("device", args.device)):
        if value is not None:
            overrides[key] = value
    settings = resolve_annotator(args.annotator, overrides)
    with StopSignal() as stop:
        try:
            # the fit file carries the upstream stages' warnings (partial inputs: truncated video,
            # trimmed/missing/dropped views): run_fit copies them from the crops/landmarks status
            status = api.run_fit(args.crops, args.landmarks, args.flame, args.embedding, args.annotator, settings,
                                 args.out, checkpoint=args.checkpoint, stop=stop)
        except Preempted as exc:
            log.warning("%s; checkpoint at %s", exc, args.checkpoint)
            return PREEMPTED_EXIT_CODE
    if status.warnings:
        log.warning("fit %s: %d warning(s) carried from upstream: %s", status.sequence, len(status.warnings),
                    "; ".join(status.warnings))
    return 0
