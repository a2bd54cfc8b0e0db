"""``neuface filter``: accept or reject every sequence's fit (paper appendix A) into a manifest TSV."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("filter", help="accept/reject fits with every reason; writes a manifest TSV")
    parser.add_argument("--fits", nargs="*", default=[], help="fit files of one annotator (.h5)")
    parser.add_argument("--fit-list", default=None, help="file listing fit files, one per line (long lists)")
    parser.add_argument("--fit-dir", default=None,
                        help="directory holding <sequence>.h5 fits: the sheet's sequences are looked up there "
                        "(a missing file is rejected as 'no fit output'); scales to any sheet size")
    parser.add_argument("--sheet", required=True, help="sample sheet (TSV): every sequence gets a line")
    parser.add_argument("--annotator", required=True, help="annotator name (neuface, regress, flamefit, ...)")
    parser.add_argument("--out", required=True, help="manifest TSV to write")
    parser.add_argument("--max-shape-norm", type=float, default=1.0, help="reject ||beta||_2 above (paper: 1.0)")
    parser.add_argument("--max-missing-frac", type=float, default=0.2,
                        help="reject when the fraction of (frame, view) pairs with no face is above (default 0.2)")
    parser.add_argument("--max-nme", type=float, default=8.0,
                        help="reject when the landmark NME (%% of sqrt(w*h) of the detections' landmark box) is "
                        "above (default 8: gross failures only; docs/metrics.md)")
    parser.add_argument("--min-frames", type=int, default=1, help="reject sequences with fewer frames (default 1)")
    parser.add_argument("--partial-inputs", choices=("flag", "reject"), default="flag",
                        help="a fit made from a partial input (truncated video, trimmed/missing/dropped views): "
                        "flag = accept it, its warnings in the manifest's warnings column (default); reject = "
                        "reject it ('partial input: ...')")
    parser.set_defaults(func=_filter)


def _filter(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neuface.dataset.filter import FilterThresholds, filter_fits, write_manifest
    from neuface.errors import NeufaceError
    from neuface.sheets import read_sheet, sequence_table

    fits = list(args.fits)
    if args.fit_list:
        lst = Path(args.fit_list)
        if not lst.is_file():
            raise NeufaceError(f"--fit-list {lst} does not exist")
        fits += [line.strip() for line in lst.read_text().splitlines() if line.strip() and not line.startswith("#")]
    table = sequence_table(read_sheet(args.sheet))
    sheet = dict(zip(table["sequence"], table["split"], strict=True))
    if args.fit_dir:
        fit_dir = Path(args.fit_dir)
        fits += [str(fit_dir / f"{seq}.h5") for seq in sheet if (fit_dir / f"{seq}.h5").is_file()]
    th = FilterThresholds(args.max_shape_norm, args.max_missing_frac, args.max_nme, args.min_frames,
                          partial_inputs=args.partial_inputs)
    records = filter_fits(fits, sheet, args.annotator, th)
    write_manifest(records, args.out, th, annotator=args.annotator)
    for rec in records:
        if rec.status != "accepted":
            log.info("rejected %s: %s", rec.sequence, "; ".join(rec.reasons))
        elif rec.warnings:
            log.warning("accepted %s with partial-input warning(s): %s", rec.sequence, ", ".join(rec.warnings))
    return 0
