"""``neuface eval-regressor``: per-frame ``regress`` with one encoder on held-out sequences, scored as in Table 5.

::

    neuface eval-regressor --sheet SHEET.tsv --crops-dir results/crops --landmarks-dir results/landmarks \\
        --flame MODEL --embedding EMB --encoder KIND --encoder-weights W --label NAME --out EVAL.json \\
        [--split test] [--fits-dir DIR] [--device ...]

Aligned MPVE (median / mean / std over GT frame-view samples, mm) and NME; NME only without ground truth.
Output JSON: docs/training.md ("Evaluation JSON").
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-regressor", help="score an encoder's per-frame regression on held-out sequences")
    p.add_argument("--sheet", required=True, help="sample sheet (ground_truth column: synthetic GT .npz)")
    p.add_argument("--crops-dir", required=True, help="directory of <sequence>.h5 crops files")
    p.add_argument("--landmarks-dir", required=True, help="directory of <sequence>.h5 landmarks files")
    p.add_argument("--flame", required=True, help="FLAME-format model")
    p.add_argument("--embedding", required=True, help="DECA-format landmark embedding (.npy)")
    p.add_argument("--encoder", required=True, choices=("builtin", "deca", "emoca"), help="encoder kind")
    p.add_argument("--encoder-weights", required=True, help="encoder weights (loaded strictly)")
    p.add_argument("--label", required=True, help="name of this encoder in tables (e.g. original, neuface3d)")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--split", default=None, help="only the sheet's sequences of this split (e.g. test)")
    p.add_argument("--fits-dir", default=None, help="keep the regress fits here (default: a temporary directory)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from neuface.io_utils import atomic_path
    from neuface.train.regressor_eval import evaluate_regressor

    result = evaluate_regressor(args.sheet, args.crops_dir, args.landmarks_dir, args.flame, args.embedding,
                                args.encoder, args.encoder_weights, args.label, split=args.split,
                                fits_dir=args.fits_dir, device=args.device)
    with atomic_path(args.out, suffix=".json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True, allow_nan=False) + "\n")
    s = result["summary"]
    mpve = s["mpve_aligned_mm"]
    log.info("eval-regressor %s: %d sequence(s), MPVE %s mm, NME %.3f%%", args.label, s["n_sequences"],
             "n/a" if mpve is None else f"median {mpve['median']:.3f} mean {mpve['mean']:.3f}",
             s["nme"]["mean"] if s["nme"] else float("nan"))
    return 0
