"""``neuface report``: paper-style tables, figures and overlay videos from per-sequence metric JSONs."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="Table 2/3-style tables (CSV, Markdown, LaTeX), plots and overlays")
    parser.add_argument("--metrics", nargs="+", required=True,
                        help="metric JSONs, or directories searched for */*.json (results/metrics): a directory "
                        "keeps the command line short for any number of sequences")
    parser.add_argument("--sheet", default=None, help="sample sheet (dataset and split of each sequence)")
    parser.add_argument("--out", required=True, help="output directory (results/report/)")
    parser.add_argument("--split", default=None, help="only sequences of this split (default: all)")
    parser.add_argument("--annotators", nargs="+", default=None, help="Table 2 rows, in order (default: all)")
    parser.add_argument("--variants", nargs="+", default=None, help="Table 3 rows, in order (default: all)")
    parser.add_argument("--label", action="append", default=[], metavar="ANNOTATOR=LABEL",
                        help="display name of an annotator (repeatable)")
    parser.add_argument("--filter-manifests", nargs="*", default=[],
                        help="filter manifests (results/filter/<annotator>.tsv): the report lists rejected fits")
    parser.add_argument("--fits", nargs="*", default=[], help="fit files whose loss curves are plotted")
    parser.add_argument("--overlay-fit", action="append", default=[], help="fit file to render (repeatable)")
    parser.add_argument("--overlay-frames", action="append", default=[],
                        help="frames file of the matching --overlay-fit (repeatable, same order)")
    parser.add_argument("--flame", default=None, help="FLAME-format model (needed for overlays)")
    parser.add_argument("--embedding", default=None, help="landmark embedding (needed for overlays)")
    parser.add_argument("--overlay-size", type=int, default=256, help="longer side of a view tile (default 256)")
    parser.add_argument("--overlay-max-frames", type=int, default=None, help="render only the first frames")
    parser.set_defaults(func=_run)


def expand_metric_paths(items: list[str]) -> list[str]:
    """Files as given; a directory contributes its ``<annotator>/<sequence>.json`` files (sorted)."""
    from pathlib import Path

    out: list[str] = []
    for item in items:
        path = Path(item)
        out += sorted(str(p) for p in path.glob("*/*.json")) if path.is_dir() else [item]
    return out


def _run(args: argparse.Namespace) -> int:
    from neuface.errors import NeufaceError
    from neuface.report import build_report
    from neuface.sheets import read_sheet

    if len(args.overlay_fit) != len(args.overlay_frames):
        raise NeufaceError("give one --overlay-frames per --overlay-fit")
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NeufaceError(f"--label must be ANNOTATOR=LABEL, got {item!r}")
        labels[key] = value
    # with sharding a crashed sequence has no fit file (its shard marker says why): leave it out, loudly
    overlays = [(f, h) for f, h in zip(args.overlay_fit, args.overlay_frames, strict=True) if _exists(f, h)]
    fits = [f for f in args.fits if _exists(f)]
    flame = None
    if overlays:
        if not (args.flame and args.embedding):
            raise NeufaceError("--overlay-fit needs --flame and --embedding")
        from neuface.flame import FlameLayer
        from neuface.metrics.fitfile import read_fit_arrays

        first = read_fit_arrays(overlays[0][0])
        n_shape = first["shape"].shape[-1] if "shape" in first else 100
        n_exp = first["expression"].shape[-1] if "expression" in first else 50
        flame = FlameLayer.from_files(args.flame, args.embedding, n_shape=n_shape, n_exp=n_exp)
    if args.overlay_size < 16:
        raise NeufaceError(f"--overlay-size must be >= 16, got {args.overlay_size}")
    sheet = read_sheet(args.sheet) if args.sheet else None
    metrics = expand_metric_paths(args.metrics)
    made = build_report(metrics, args.out, sheet=sheet, annotators=args.annotators, variants=args.variants,
                        split=args.split, labels=labels, fits=fits, overlays=overlays, flame=flame,
                        overlay_tile=args.overlay_size, overlay_max_frames=args.overlay_max_frames,
                        manifests=args.filter_manifests)
    log.info("report written to %s (%s)", args.out, ", ".join(k for k, v in made.items() if v))
    return 0


def _exists(*paths: str) -> bool:
    from pathlib import Path

    missing = [p for p in paths if not Path(p).exists()]
    for p in missing:
        log.warning("%s does not exist (its sequence failed upstream): left out of the report", p)
    return not missing
