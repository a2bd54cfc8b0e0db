"""``neuface landmarks``: 68 2D landmarks of one tracked face per frame and view of a frames file.

A failed upstream frames file, or a sequence with no face at all, gives an output with ``status='failed'`` and
exit code 0 (the workflow carries on). Missing detector weights are a usage error (exit code 2) whose message
says which file to put where. Shot segmentation (cuts and identity switches, :mod:`neuface.landmarks.shots`) is on
unless ``--no-shots``; ``--no-identity`` keeps the cuts but skips the face descriptors.
"""

from __future__ import annotations

import argparse
import functools
import logging

from neuface.cli.argtypes import resolve_device_name
from neuface.landmarks.backends import BACKENDS, make_backend
from neuface.landmarks.extract import detect_sequence
from neuface.landmarks.shots import ShotSettings
from neuface.status import read_status, write_status

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("landmarks", help="detect 68 2D landmarks of one tracked face per frame",
                            description="68 2D landmarks of one tracked face per frame and view of a frames "
                                        "file. A failed upstream or no face at all gives status 'failed' and "
                                        "exit code 0.")
    parser.add_argument("--frames", required=True, help="frames file from `neuface frames`")
    parser.add_argument("--out", required=True, help="output landmarks file, e.g. results/landmarks/ID.h5")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="fan (face-alignment; weights in $TORCH_HOME/hub/checkpoints), dlib (offline), "
                             "auto: fan if its weights are there, else dlib (default)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda[:N] or auto (cuda if this process sees a GPU, else cpu); fan only")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per detector/FAN batch (16)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="face detection threshold (fan: S3FD probability, default 0.5; dlib: HOG score, "
                             "default 0.0)")
    parser.add_argument("--det-size", type=int, default=320,
                        help="dlib only: detect on frames resized to this shorter side (320)")
    defaults = ShotSettings()
    shots = parser.add_argument_group("shots", "cuts and identity switches split the sequence into shots; the "
                                               "tracker restarts at cuts and each shot is fitted on its own")
    shots.add_argument("--no-shots", action="store_true",
                       help="no segmentation: the whole sequence is one shot (no /shots in the output)")
    shots.add_argument("--shot-min-frames", type=int, default=defaults.min_frames,
                       help=f"shorter shots merge into the previous one (the first into the next) "
                            f"({defaults.min_frames})")
    shots.add_argument("--cut-threshold", type=float, default=defaults.cut_threshold,
                       help=f"least HSV-histogram distance (0..1) of a cut to the previous frame "
                            f"({defaults.cut_threshold})")
    shots.add_argument("--cut-ratio", type=float, default=defaults.cut_ratio,
                       help=f"a cut's distance must also be this many times its running level ({defaults.cut_ratio})")
    shots.add_argument("--identity-threshold", type=float, default=defaults.identity_threshold,
                       help=f"dlib face-descriptor distance above which the tracked face is another person "
                            f"({defaults.identity_threshold})")
    shots.add_argument("--no-identity", action="store_true", help="cuts only: no face descriptors")
    shots.add_argument("--identity-stride", type=int, default=defaults.identity_stride,
                       help=f"describe every N-th detected frame of the tracked face ({defaults.identity_stride})")
    parser.add_argument("--status-json", default=None, help="also write the status record to this JSON file")
    parser.set_defaults(func=_landmarks)


def shot_settings(args: argparse.Namespace) -> ShotSettings:
    """The ``--shot*`` / ``--cut-*`` / ``--identity-*`` options as :class:`ShotSettings` (validated)."""
    return ShotSettings(enabled=not args.no_shots, min_frames=args.shot_min_frames,
                        cut_threshold=args.cut_threshold, cut_ratio=args.cut_ratio,
                        identity_threshold=None if args.no_identity else args.identity_threshold,
                        identity_stride=args.identity_stride)


def _landmarks(args: argparse.Namespace) -> int:
    shots = shot_settings(args)
    upstream = read_status(args.frames)
    if upstream.ok:
        device = resolve_device_name(args.device)
        backend = _backend(args.backend, device, args.min_score, args.batch_size, args.det_size)
    else:
        backend = _NoBackend(args.backend)  # nothing to compute: do not load (or require) any weights
    status = detect_sequence(args.frames, args.out, backend, batch_size=args.batch_size, shots=shots)
    if args.status_json:
        write_status(status, args.status_json)
    return 0


@functools.lru_cache(maxsize=2)
def _backend(name: str, device: str, min_score: float | None, batch_size: int, det_size: int):
    """make_backend, once per process and settings: `neuface shard` runs this command for many sequences in one
    process, and loading FAN + S3FD (or dlib's predictor) per clip would cost as much as detecting. Backends
    keep no per-sequence state (tracking lives in detect_sequence)."""
    return make_backend(name, device=device, min_score=min_score, batch_size=batch_size, det_size=det_size)


class _NoBackend:
    """Stands in for a backend when the upstream failed (only its name/version are recorded)."""

    score_kind = "n/a"

    def __init__(self, name: str):
        self.name = name
        self.version = "not loaded (upstream failed)"

    def detect(self, frames):  # pragma: no cover - never called
        raise RuntimeError("no backend loaded")

    def landmarks(self, frames, boxes):  # pragma: no cover - never called
        raise RuntimeError("no backend loaded")
