"""``neuface render``: pictures of head models (and, later, overlays of fits on frames)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("render", help="render head models and overlays")
    render_sub = parser.add_subparsers(dest="render_command", metavar="WHAT", required=True)
    preview = render_sub.add_parser("preview", help="contact sheet of a FLAME-format model with its landmarks")
    preview.add_argument("--flame", required=True, help="FLAME-format model (.pkl or .npz)")
    preview.add_argument("--embedding", default=None, help="DECA-format landmark_embedding.npy (for the overlay)")
    preview.add_argument("--size", type=int, default=384, help="panel side in pixels (default 384)")
    preview.add_argument("--out", required=True, help="output PNG")
    preview.set_defaults(func=_preview)


def _preview(args: argparse.Namespace) -> int:
    from neuface.visualize import write_preview

    write_preview(args.flame, args.embedding, args.out, args.size)
    return 0
