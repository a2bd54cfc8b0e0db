"""``neuface pack``: one HDF5 dataset file per split and annotator from the filter manifest."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pack", help="pack the accepted sequences of one split into one HDF5 file")
    parser.add_argument("--manifest", required=True, help="filter manifest TSV (neuface filter)")
    parser.add_argument("--split", required=True, help="split to pack (train, val, test)")
    parser.add_argument("--out", required=True, help="output .h5")
    parser.add_argument("--flame", default=None, help="FLAME model; its sha256 must match the fits'")
    parser.add_argument("--annotator", default=None, help="expected annotator (default: the manifest's)")
    parser.add_argument("--compression", default="gzip", choices=("gzip", "lzf", "none"),
                        help="chunk compression (gzip level 4 + shuffle by default)")
    parser.set_defaults(func=_pack)


def _pack(args: argparse.Namespace) -> int:
    from neuface.dataset.pack import pack_split

    pack_split(args.manifest, args.split, args.out, flame=args.flame, annotator=args.annotator,
               compression=args.compression)
    return 0
