"""``neuface frames``: decode one sequence's videos (all views) into one HDF5 frames file.

Bad videos do not fail the command: the output is written with ``status='failed'`` and a reason, and the
exit code is 0 so the workflow carries on (later stages propagate the failure). Only usage errors (missing
sheet, unknown sequence) exit non-zero.
"""

from __future__ import annotations

import argparse
import logging

from neuface.errors import NeufaceError
from neuface.sheets import expected_views, read_sheet
from neuface.status import write_status
from neuface.video.extract import VIEW_ERROR_POLICIES, extract_sequence

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("frames", help="decode a sequence's videos into one HDF5 frames file",
                            description="Decode one sequence's videos (all views) into one HDF5 frames file. "
                                        "Bad videos give a file with status 'failed' and exit code 0.")
    parser.add_argument("--sheet", required=True, help="sample sheet (TSV)")
    parser.add_argument("--sequence", required=True, help="sequence id (a value of the sheet's 'sequence')")
    parser.add_argument("--out", required=True, help="output frames file, e.g. results/frames/ID.h5")
    parser.add_argument("--fps", type=float, default=None,
                        help="resample to this frame rate by picking frames by timestamp (default: keep all)")
    parser.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames per view")
    parser.add_argument("--max-size", type=int, default=None,
                        help="downscale so that the longer side is at most this many pixels")
    parser.add_argument("--on-view-error", choices=VIEW_ERROR_POLICIES, default="drop",
                        help="a failing view of a multi-view sequence is dropped (default) or fails it")
    parser.add_argument("--compression", choices=("lzf", "gzip", "none"), default="lzf",
                        help="HDF5 compression of the frames (lzf: fast; gzip: level 1, smaller)")
    parser.add_argument("--expected-views", default=None,
                        help="comma-separated views the sequence's dataset has (default: from the sheet: the union "
                             "over the sequence's dataset); a missing one is reported")
    parser.add_argument("--status-json", default=None, help="also write the status record to this JSON file")
    parser.set_defaults(func=_frames)


def _frames(args: argparse.Namespace) -> int:
    sheet = read_sheet(args.sheet)  # whole sheet: peers' views tell which views this sequence lacks
    rows = sheet[sheet["sequence"] == args.sequence]
    if rows.empty:
        raise NeufaceError(f"sequence {args.sequence!r} is not in the sample sheet {args.sheet}")
    status = extract_sequence(
        rows, args.out, fps=args.fps, max_frames=args.max_frames, max_size=args.max_size,
        expected_views=_expected_views(args, sheet), on_view_error=args.on_view_error,
        compression=None if args.compression == "none" else args.compression)
    if args.status_json:
        write_status(status, args.status_json)
    return 0


def _expected_views(args: argparse.Namespace, sheet) -> list[str]:
    if args.expected_views is None:
        return expected_views(sheet, args.sequence)
    views = sorted({v.strip() for v in args.expected_views.split(",") if v.strip()})
    if not views:
        raise NeufaceError(f"--expected-views is empty: {args.expected_views!r}")
    return views
