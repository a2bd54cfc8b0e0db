"""``neuface synth``: render a synthetic face video (one MP4 per view) with its ground truth."""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from pathlib import Path

from neuface.errors import NeufaceError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("synth", help="render a synthetic multi-view or monocular sequence with ground truth")
    parser.add_argument("--flame", required=True, help="FLAME-format model (.pkl/.npz)")
    parser.add_argument("--embedding", required=True, help="DECA-format landmark embedding (.npy)")
    parser.add_argument("--rig", choices=("mead", "mono"), default="mono", help="7 MEAD views or one camera")
    parser.add_argument("--video", required=True,
                        help="output path pattern with {view}, e.g. out/M900/video/{view}/neutral/level_1/001.mp4")
    parser.add_argument("--gt", required=True, help="ground-truth .npz output")
    parser.add_argument("--frames", type=int, default=50, help="number of frames (default 50)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (motion, identity, cameras, colours)")
    parser.add_argument("--neck-deg", type=float, default=0.0,
                        help="std of the neck rotation in degrees per axis (default 0: no neck motion, which the "
                        "annotators do not fit; > 0 is the neck-motion robustness case, e.g. 2)")
    parser.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from neuface.flame import FlameLayer
    from neuface.synthetic.capture import render_capture, save_ground_truth, write_mp4
    from neuface.synthetic.motion import sample_motion
    from neuface.synthetic.rig import make_rig

    if args.rig == "mead" and "{view}" not in args.video:
        raise NeufaceError("--video must contain {view} for a multi-view rig")
    if args.frames < 1 or args.size < 32:
        raise NeufaceError("--frames must be >= 1 and --size >= 32")
    if not (math.isfinite(args.neck_deg) and args.neck_deg >= 0):
        raise NeufaceError(f"--neck-deg must be a finite number >= 0, got {args.neck_deg}")
    flame = FlameLayer.from_files(args.flame, args.embedding, n_shape=100, n_exp=50)
    motion = sample_motion(args.frames, fps=args.fps, n_shape=flame.n_shape, n_exp=flame.n_exp, seed=args.seed,
                           neck_deg=args.neck_deg)
    rig = make_rig(args.rig, seed=args.seed)
    capture = render_capture(flame, motion, rig, args.size, seed=args.seed)
    for v, view in enumerate(rig.names):
        path = write_mp4(capture.frames[v], args.video.format(view=view), fps=args.fps)
        log.info("wrote %s (%d frames, %dx%d)", path, args.frames, args.size, args.size)
    sha = hashlib.sha256(Path(args.flame).read_bytes()).hexdigest()
    save_ground_truth(args.gt, motion, rig, capture, args.size, sha)
    log.info("wrote ground truth %s", args.gt)
    return 0
