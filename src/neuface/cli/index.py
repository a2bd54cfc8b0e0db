"""``neuface index LAYOUT ROOT --out SHEET``: build a sample sheet from a dataset directory tree."""

from __future__ import annotations

import argparse
import logging

from neuface.index import LAYOUTS, MEAD_VIEWS, index_dataset
from neuface.sheets import write_sheet

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "index", help="build a sample sheet (TSV) from a dataset directory",
        description="Scan ROOT in the given layout and write a validated sample sheet with per-identity "
                    "splits (mead: {subject}/video/{view}/{emotion}/level_{n}/{clip}.mp4; voxceleb2: "
                    "{id}/{youtube}/{clip}.mp4; celebvhq: flat *.mp4; files: any video under ROOT).")
    parser.add_argument("layout", choices=sorted(LAYOUTS), help="directory layout of the dataset")
    parser.add_argument("root", help="dataset root directory (paths in the sheet start with it as given)")
    parser.add_argument("--out", required=True, help="sample sheet to write, e.g. config/videos.tsv")
    parser.add_argument("--val-frac", type=float, default=0.1, help="fraction of identities in val (0.1)")
    parser.add_argument("--test-frac", type=float, default=0.1, help="fraction of identities in test (0.1)")
    parser.add_argument("--seed", default="0", help="salt of the identity hash that assigns splits (0)")
    parser.add_argument("--views", default=None,
                        help="mead only: comma-separated cameras to keep "
                             f"(default all: {','.join(MEAD_VIEWS)})")
    parser.set_defaults(func=_index)


def _index(args: argparse.Namespace) -> int:
    views = tuple(v.strip() for v in args.views.split(",") if v.strip()) if args.views else None
    df = index_dataset(args.layout, args.root, val_frac=args.val_frac, test_frac=args.test_frac,
                       seed=args.seed, views=views)
    write_sheet(df, args.out)
    log.info("wrote %s (%d rows, %d sequences)", args.out, len(df), df["sequence"].nunique())
    return 0
