"""``neuface metrics``: fidelity metrics (MSI_3D^L/V, CVD, NME, MPVE) of one fit file as JSON."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("metrics", help="MSI_3D, CVD, NME (and MPVE with ground truth) of one fit")
    parser.add_argument("--fit", required=True, help="fit file (results/fits/<annotator>/<sequence>.h5)")
    parser.add_argument("--flame", required=True, help="FLAME-format model the fit used")
    parser.add_argument("--embedding", required=True, help="DECA-format landmark embedding")
    parser.add_argument("--gt", default=None,
                        help="ground-truth .npz (synthetic sequences): adds mpve_aligned, mpve, nme_gt, "
                        "nme_gt_eye ('' = none)")
    parser.add_argument("--frames", default=None,
                        help="frames file: rescales GT landmarks when the frames were resized (with --gt)")
    parser.add_argument("--out", required=True, help="output JSON (results/metrics/<annotator>/<sequence>.json)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--chunk", type=int, default=32, help="frames per FLAME batch (default 32)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import torch

    from neuface.errors import NeufaceError
    from neuface.io_utils import atomic_path, finite_or_null
    from neuface.metrics import sequence_metrics
    from neuface.metrics.fitfile import read_fit_arrays
    from neuface.metrics.sequence import gt_pixel_scale
    from neuface.process_cache import cached_flame_layer

    if args.chunk < 1:
        raise NeufaceError(f"--chunk must be >= 1, got {args.chunk}")
    args.gt = args.gt or None  # '' = no ground truth (a sheet's empty ground_truth cell)
    fit = read_fit_arrays(args.fit)
    n_shape = fit["shape"].shape[-1] if "shape" in fit else 100
    n_exp = fit["expression"].shape[-1] if "expression" in fit else 50
    flame = cached_flame_layer(args.flame, args.embedding, n_shape=n_shape, n_exp=n_exp, device=args.device)
    scale = None
    if args.gt and args.frames and fit["status"].ok:
        scale = gt_pixel_scale(args.gt, args.frames)
    with torch.inference_mode():
        result = sequence_metrics(args.fit, flame, gt_path=args.gt if fit["status"].ok else None,
                                  chunk=args.chunk, gt_pixel_scale=scale)
    with atomic_path(args.out, suffix=".json") as tmp:
        tmp.write_text(json.dumps(finite_or_null(result), indent=2, sort_keys=True, allow_nan=False) + "\n")
    if result["status"] == "ok":
        shown = {k: round(v, 4) for k, v in result["metrics"].items() if v is not None}
        log.info("metrics %s/%s: %s", result["annotator"], result["sequence"], shown)
    else:
        log.warning("metrics %s/%s: fit failed (%s); no metrics", result["annotator"], result["sequence"],
                    result["reason"])
    return 0
