"""``neuface render``: pictures of head models, and overlay videos of fits on their frames."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("render", help="render head models and overlays")
    render_sub = parser.add_subparsers(dest="render_command", metavar="WHAT", required=True)
    preview = render_sub.add_parser("preview", help="contact sheet of a FLAME-format model with its landmarks")
    preview.add_argument("--flame", required=True, help="FLAME-format model (.pkl or .npz)")
    preview.add_argument("--embedding", default=None, help="DECA-format landmark_embedding.npy (for the overlay)")
    preview.add_argument("--size", type=int, default=384, help="panel side in pixels (default 384)")
    preview.add_argument("--out", required=True, help="output PNG")
    preview.set_defaults(func=_preview)
    overlay = render_sub.add_parser(
        "overlay", help="overlay video (MP4) of one fit on its frames: mesh, detections, projected landmarks",
        description="Render one fit over its frames file, every view tiled: the mesh (blue), the detections "
        "(green), the fit's projected landmarks (red); tiles of frames without a detection have a magenta border. "
        "The report's overlays are capped by report.overlay_max_frames / overlay_size; this renders any fit, "
        "by default every frame.")
    overlay.add_argument("--fit", required=True, help="fit file (results/fits/<annotator>/<sequence>.h5)")
    overlay.add_argument("--frames", required=True, help="its frames file (results/frames/<sequence>.h5)")
    overlay.add_argument("--flame", required=True, help="the FLAME-format model the fit used")
    overlay.add_argument("--embedding", required=True, help="its landmark embedding (.npy)")
    overlay.add_argument("--out", required=True, help="output .mp4")
    overlay.add_argument("--size", type=int, default=512, help="longer side of a view tile in pixels (default 512)")
    overlay.add_argument("--max-frames", type=int, default=None, help="render only the first N frames (default all)")
    overlay.add_argument("--fps", type=float, default=None, help="frame rate of the video (default: the fit's)")
    overlay.set_defaults(func=_overlay)


def _preview(args: argparse.Namespace) -> int:
    from neuface.visualize import write_preview

    write_preview(args.flame, args.embedding, args.out, args.size)
    return 0


def _overlay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neuface.errors import NeufaceError
    from neuface.flame import FlameLayer
    from neuface.metrics.fitfile import read_fit_arrays
    from neuface.report.overlay import write_overlay_video

    if args.size < 16:
        raise NeufaceError(f"--size must be >= 16, got {args.size}")
    if args.max_frames is not None and args.max_frames < 1:
        raise NeufaceError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.fps is not None and not args.fps > 0:
        raise NeufaceError(f"--fps must be positive, got {args.fps}")
    if not Path(args.frames).is_file():
        raise NeufaceError(f"frames file {args.frames} does not exist")
    fit = read_fit_arrays(args.fit)
    if not fit["status"].ok:
        raise NeufaceError(f"{args.fit}: the fit failed ({fit['status'].reason}); nothing to overlay")
    flame = FlameLayer.from_files(args.flame, args.embedding, n_shape=fit["shape"].shape[-1],
                                  n_exp=fit["expression"].shape[-1])
    path = write_overlay_video(args.fit, args.frames, flame, args.out, tile=args.size, max_frames=args.max_frames,
                               fps=args.fps)
    if "detected" in fit:
        missing = int((~fit["detected"][: args.max_frames].astype(bool)).any(axis=1).sum())
        if missing:
            log.info("%d frame(s) with a view without a detection are framed in magenta", missing)
    log.info("overlay written to %s", path)
    return 0
