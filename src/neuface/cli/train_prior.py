"""``neuface train motion-prior``: train a HuMoR-style facial motion prior on packed datasets (paper §5.1).

::

    neuface train motion-prior --dataset D.h5 [--dataset D2.h5 ...] --flame MODEL --embedding EMB --out P.pt \\
        [--max-sequences N] [--subset-seed S] [--steps N] [--batch-size B] [--lr LR] [--latent-dim Z] \\
        [--hidden H] [--kl-weight X] [--seed S] [--device cpu|cuda|auto] [--amp] [--checkpoint CK.pt] \\
        [--checkpoint-every N] [--curve CURVE.csv] [--views front|all] [--layers L] [--consistency-weight W] \\
        [--rollout-steps R] [--input-noise S] [--curve-every N] [--val-fraction F] [--val-every N]

SIGTERM writes the checkpoint (when ``--checkpoint`` is given) and exits 143; a rerun resumes.
"""

from __future__ import annotations

import argparse
import logging

from neuface.cli.argtypes import non_negative_int, positive_int

log = logging.getLogger(__name__)


def add_train_parser(actions: argparse._SubParsersAction) -> None:
    from neuface.train.motion_train import PriorSettings

    d = PriorSettings()
    p = actions.add_parser("motion-prior", help="train a conditional-VAE facial motion prior (HuMoR-style)",
                           description="Train p(x_{t+1} | x_t) on the motion of packed datasets.")
    p.add_argument("--dataset", action="append", required=True, help="packed neuface.dataset file (repeatable)")
    p.add_argument("--flame", required=True, help="FLAME-format model the datasets were made with")
    p.add_argument("--embedding", required=True, help="DECA-format landmark_embedding.npy (3D landmarks)")
    p.add_argument("--out", required=True, help="output prior (.pt)")
    p.add_argument("--max-sequences", type=positive_int, default=None,
                   help="use at most N sequences per dataset, drawn with --subset-seed (default all)")
    p.add_argument("--subset-seed", type=non_negative_int, default=d.subset_seed, help="seed of the subset")
    p.add_argument("--views", default=d.views, choices=("front", "all"),
                   help="front: one view per sequence (front, else the first); all: every view a sample "
                        f"(default {d.views})")
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"transition pairs per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--latent-dim", type=positive_int, default=d.latent_dim, help=f"z size (default {d.latent_dim})")
    p.add_argument("--hidden", type=positive_int, default=d.hidden, help=f"MLP width (default {d.hidden})")
    p.add_argument("--layers", type=positive_int, default=d.n_layers,
                   help=f"hidden layers per MLP (default {d.n_layers})")
    p.add_argument("--kl-weight", type=float, default=d.kl_weight, help=f"β_KL (default {d.kl_weight})")
    p.add_argument("--consistency-weight", type=float, default=d.consistency_weight,
                   help=f"weight of the J̇ vs finite-difference term (default {d.consistency_weight})")
    p.add_argument("--rollout-steps", type=positive_int, default=d.rollout_steps,
                   help="train on windows of R pairs fed the model's own predictions (1: teacher forcing; "
                        f"default {d.rollout_steps})")
    p.add_argument("--input-noise", type=float, default=d.input_noise,
                   help=f"std of Gaussian noise on the normalised input state (default {d.input_noise})")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="fraction of the training sequences held out for model selection: the prior written is "
                        "the model of the step with the lowest held-out one-step NLL (0: none, the last step's; "
                        f"default {d.val_fraction})")
    p.add_argument("--val-every", type=positive_int, default=d.val_every,
                   help=f"steps between held-out NLL evaluations (default {d.val_every})")
    p.add_argument("--seed", type=non_negative_int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when visible; default cpu)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--checkpoint", default=None, help="resumable checkpoint file (deleted at success)")
    p.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every,
                   help=f"steps between checkpoints (default {d.checkpoint_every})")
    p.add_argument("--curve", default=None, help="write the loss curve CSV here")
    p.add_argument("--curve-every", type=positive_int, default=d.curve_every,
                   help=f"steps between loss-curve rows (default {d.curve_every})")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from neuface.cli.argtypes import resolve_device_name
    from neuface.fitting.checkpoint import PREEMPTED_EXIT_CODE, Preempted, StopSignal
    from neuface.train.motion_train import PriorSettings, train_motion_prior

    settings = PriorSettings(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim, hidden=args.hidden,
        n_layers=args.layers, kl_weight=args.kl_weight, consistency_weight=args.consistency_weight,
        rollout_steps=args.rollout_steps, input_noise=args.input_noise,
        seed=args.seed, views=args.views, max_sequences=args.max_sequences, subset_seed=args.subset_seed,
        device=resolve_device_name(args.device), amp=args.amp, checkpoint_every=args.checkpoint_every,
        curve_every=args.curve_every, val_fraction=args.val_fraction, val_every=args.val_every,
    )
    with StopSignal() as stop:
        try:
            train_motion_prior(args.dataset, args.flame, args.embedding, args.out, settings,
                               checkpoint=args.checkpoint, curve=args.curve, stop=stop)
        except Preempted as exc:
            log.warning("%s; rerun to resume from %s", exc, args.checkpoint)
            return PREEMPTED_EXIT_CODE
    return 0
