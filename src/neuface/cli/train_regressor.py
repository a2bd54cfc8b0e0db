"""``neuface train regressor``: fine-tune a FLAME encoder on packed NeuFace datasets with 2D + 3D supervision.

::

    neuface train regressor --dataset D.h5 [--dataset D2.h5 ...] --crops-dir results/crops \\
        --flame MODEL --embedding EMB --encoder {builtin,deca,emoca} --encoder-weights W --out OUT.pt \\
        [--no-3d] [--identity-3d label|predicted] [--pose-3d posed|canonical] [--steps N] [--batch-size B] [--lr LR] \\
        [--lambda-l2d X] [--lambda-m3d X] [--lambda-j3d X] \\
        [--val-dataset V.h5] [--val-every N] [--seed S] [--device cpu|cuda|auto] [--amp] \\
        [--checkpoint CK.pt] [--checkpoint-every N] [--curve CURVE.csv] [--skip-missing]

Writes OUT in the format of the encoder kind (loadable by ``load_encoder(kind, OUT)``, usable as
``encoder.weights`` of the next annotation round) and its lineage record ``OUT.json`` (docs/training.md).
SIGTERM writes the checkpoint and exits 143; a rerun resumes.
"""

from __future__ import annotations

import argparse
import logging

from neuface.cli.argtypes import non_negative_int, positive_int

log = logging.getLogger(__name__)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_train_parser(actions: argparse._SubParsersAction) -> None:
    """Add the ``regressor`` action to ``neuface train``."""
    from neuface.train.regressor_settings import DEFAULT_LR, IDENTITY_3D, POSE_3D, RegressorSettings

    d = RegressorSettings()
    p = actions.add_parser("regressor", help="fine-tune an encoder on packed datasets (2D + 3D supervision)",
                           description="Fine-tune a FLAME encoder on packed NeuFace annotations (paper §5.2).")
    p.add_argument("--dataset", action="append", required=True, metavar="D.h5",
                   help="packed training split (neuface pack); repeat for several")
    p.add_argument("--crops-dir", required=True, help="directory of <sequence>.h5 crops files the fits used")
    p.add_argument("--flame", required=True, help="FLAME-format model the datasets were fitted with")
    p.add_argument("--embedding", required=True, help="DECA-format landmark embedding (.npy)")
    p.add_argument("--encoder", required=True, choices=("builtin", "deca", "emoca"), help="encoder kind")
    p.add_argument("--encoder-weights", required=True, help="weights to start from (loaded strictly)")
    p.add_argument("--out", required=True, help="output weights (same format as the input kind)")
    p.add_argument("--no-3d", dest="use_3d", action="store_false",
                   help="2D landmark loss only (the paper's DECA_NeuFace,2D)")
    p.add_argument("--identity-3d", choices=IDENTITY_3D, default=d.identity_3d,
                   help="identity in the 3D terms: label (the paper's: targets with the annotation's beta) or "
                        "predicted (the encoder's own beta on both sides, no gradient to it: the 3D terms "
                        f"supervise expression, jaw and head pose only; default {d.identity_3d})")
    p.add_argument("--pose-3d", choices=POSE_3D, default=d.pose_3d,
                   help="frame of the 3D terms: posed (the paper's: global head rotation applied on both sides) or "
                        "canonical (no global rotation on either side: head pose is left to the 2D landmark term; "
                        f"default {d.pose_3d})")
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"frames per step (default {d.batch_size})")
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    p.add_argument("--lr", type=_non_negative_float, default=None, help=f"Adam learning rate (default: {lrs})")
    for name, what in (("l2d", "2D landmark L1 (crop NDC)"), ("m3d", "mesh vertex L_M3D (mm²)"),
                       ("j3d", "3D landmark L_J3D (mm²)")):
        default = getattr(d, f"lambda_{name}")
        p.add_argument(f"--lambda-{name}", type=_non_negative_float, default=default,
                       help=f"weight of the {what} term (default {default:g})")
    p.add_argument("--val-dataset", action="append", default=None, metavar="V.h5",
                   help="held-out packed split for the validation loss; repeat for several")
    p.add_argument("--val-every", type=non_negative_int, default=d.val_every,
                   help=f"steps between validation passes, 0: only at the end (default {d.val_every})")
    p.add_argument("--val-max-items", type=non_negative_int, default=d.val_max_items,
                   help=f"validation frames used, 0: all (default {d.val_max_items})")
    p.add_argument("--seed", type=non_negative_int, default=d.seed, help=f"shuffling seed (default {d.seed})")
    p.add_argument("--device", default=d.device, help="cpu | cuda | auto (default auto)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for the encoder")
    p.add_argument("--train-batchnorm", action="store_true",
                   help="update BatchNorm statistics (default: frozen, as NeuFace fits the encoder)")
    p.add_argument("--workers", type=non_negative_int, default=d.workers,
                   help=f"DataLoader worker processes (default {d.workers})")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (resumed if present and matching)")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=d.checkpoint_every,
                   help=f"steps between checkpoints, 0: only on SIGTERM (default {d.checkpoint_every})")
    p.add_argument("--curve", default=None, help="loss curve CSV (step,total,l2d,m3d,j3d,lr,val_*)")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip sequences without a crops file (warning) instead of failing")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from neuface.fitting.checkpoint import PREEMPTED_EXIT_CODE, Preempted, StopSignal
    from neuface.train.regressor import finetune_regressor
    from neuface.train.regressor_settings import RegressorSettings

    settings = RegressorSettings(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, lambda_l2d=args.lambda_l2d,
        lambda_m3d=args.lambda_m3d, lambda_j3d=args.lambda_j3d, use_3d=args.use_3d, identity_3d=args.identity_3d,
        pose_3d=args.pose_3d,
        freeze_batchnorm=not args.train_batchnorm, seed=args.seed, amp=args.amp, skip_missing=args.skip_missing,
        val_every=args.val_every, val_max_items=args.val_max_items, device=args.device, workers=args.workers,
        checkpoint_every=args.checkpoint_every, progress=args.progress)
    with StopSignal() as stop:
        try:
            result = finetune_regressor(settings, args.dataset, args.crops_dir, args.flame, args.embedding,
                                        args.encoder, args.encoder_weights, args.out, val_datasets=args.val_dataset,
                                        checkpoint=args.checkpoint, curve=args.curve, stop=stop)
        except Preempted as exc:
            log.warning("%s; checkpoint at %s", exc, args.checkpoint)
            return PREEMPTED_EXIT_CODE
    log.info("wrote %s (%s)", result.out, result.lineage["encoder"]["encoder_id"])
    return 0
