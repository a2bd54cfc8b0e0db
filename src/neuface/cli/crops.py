"""``neuface crops``: DECA-style face crops + transforms for one sequence (the ``crops`` rule)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("crops", help="224x224 face crops and their transforms for one sequence")
    parser.add_argument("--frames", required=True, help="frames file of the sequence (.h5)")
    parser.add_argument("--landmarks", required=True, help="landmarks file of the sequence (.h5)")
    parser.add_argument("--out", required=True, help="output crops file (.h5)")
    parser.add_argument("--size", type=int, default=224, help="crop side in pixels (default 224)")
    parser.add_argument("--scale", type=float, default=1.25, help="box scale over the landmark extent (DECA 1.25)")
    parser.add_argument("--smooth-window", type=int, default=5,
                        help="centred temporal window (odd) for box smoothing; 1 disables (default 5)")
    parser.set_defaults(func=_crops)


def _crops(args: argparse.Namespace) -> int:
    from neuface.crops import crop_sequence

    crop_sequence(args.frames, args.landmarks, args.out, crop_size=args.size, scale=args.scale,
                  smooth_window=args.smooth_window)
    return 0
