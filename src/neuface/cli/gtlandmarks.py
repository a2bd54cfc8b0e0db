"""``neuface landmarks-from-gt``: a landmarks file from synthetic ground truth plus detector-like noise."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("landmarks-from-gt",
                            help="landmarks file (neuface.landmarks format) from ground truth + noise")
    parser.add_argument("--gt", required=True, help="ground-truth .npz written by `neuface synth`")
    parser.add_argument("--frames", required=True, help="frames file of the sequence (.h5)")
    parser.add_argument("--out", required=True, help="output landmarks file (.h5)")
    parser.add_argument("--noise-json", default="{}",
                        help='noise model, e.g. \'{"sigma": 1.5, "outlier_prob": 0.02, "outlier_max": 20, '
                             '"miss_prob": 0.01, "bias": 1.0}\' (pixels / probabilities; default: no noise)')
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise (default 0)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from neuface.synthetic.noise import LandmarkNoise, landmarks_from_gt

    landmarks_from_gt(args.gt, args.frames, args.out, LandmarkNoise.from_json(args.noise_json), seed=args.seed)
    return 0
