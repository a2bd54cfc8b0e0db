"""``neuface h5``: verify packed dataset files and export sequences (official params.npz, OBJ/PLY meshes)."""

from __future__ import annotations

import argparse
import logging

from neuface.errors import NeufaceError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("h5", help="verify or export neuface HDF5 datasets")
    h5_sub = parser.add_subparsers(dest="h5_command", metavar="WHAT", required=True)
    verify = h5_sub.add_parser("verify", help="check schema, shapes, finiteness; exit 2 if anything is wrong")
    verify.add_argument("files", nargs="+", help="neuface.dataset (or neuface.fit) files")
    verify.set_defaults(func=_verify)
    export = h5_sub.add_parser("export", help="one sequence as params.npz (official layout) or meshes")
    export.add_argument("file", help="neuface.dataset file")
    export.add_argument("--sequence", required=True, help="sequence id")
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--format", default="npz", choices=("npz", "obj", "ply"), help="default npz")
    export.add_argument("--frames", default=None, help="comma-separated frame positions (default: all)")
    export.add_argument("--view", default=None, help="view name (default: front, else the first view)")
    export.add_argument("--flame", default=None, help="FLAME model (needed for obj/ply)")
    export.add_argument("--embedding", default=None, help="landmark embedding: also write 3D landmarks")
    export.set_defaults(func=_export)


def _verify(args: argparse.Namespace) -> int:
    from neuface.dataset.verify import verify_file

    bad = []
    for path in args.files:
        report = verify_file(path)
        if report.ok:
            log.info("%s", report.summary())
        else:
            bad.append(report.summary())
    if bad:
        raise NeufaceError("\n".join(bad))
    return 0


def _export(args: argparse.Namespace) -> int:
    from neuface.dataset.export import export_sequence

    frames = None
    if args.frames:
        try:
            frames = [int(x) for x in args.frames.split(",") if x.strip()]
        except ValueError:
            raise NeufaceError(f"--frames must be comma-separated integers, got {args.frames!r}") from None
    export_sequence(args.file, args.sequence, args.out, fmt=args.format, frames=frames, view=args.view,
                    flame=args.flame, embedding=args.embedding)
    return 0
