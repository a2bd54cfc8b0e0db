"""``neuface prior``: sample from and evaluate a facial motion prior (``neuface train motion-prior``).

::

    neuface prior sample --prior P.pt --start D.h5 [--sequence ID] [--frame 0] --flame MODEL --embedding EMB \\
        --seconds 10 --n-samples K --seed S --out SAMPLES.h5 [--clamp] [--device DEV]
    neuface prior eval --prior P.pt --test T.h5 [--test T2.h5] --flame MODEL --embedding EMB --label NAME \\
        --out EVAL.json [--seconds 10] [--n-samples 50] [--n-starts N] [--seed S] [--device ...] [--clamp]
        [--window-s 1.0]

``sample`` writes a ``neuface.dataset`` file (one sequence per sample, view ``prior``) that ``neuface h5
verify`` / ``neuface h5 export`` read; ``eval`` writes the ``neuface.eval.motion_prior`` JSON (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import logging

from neuface.cli.argtypes import non_negative_int, positive_float, positive_int

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior", required=True, help="prior file (neuface train motion-prior --out)")
    p.add_argument("--flame", required=True, help="FLAME-format model")
    p.add_argument("--embedding", required=True, help="DECA-format landmark_embedding.npy")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="length of each sample (default 10)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (default cpu)")
    p.add_argument("--clamp", action="store_true",
                   help="keep generated states within the (widened) training range")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("prior", help="sample from or evaluate a facial motion prior")
    actions = parser.add_subparsers(dest="prior_command", metavar="ACTION", required=True)
    s = actions.add_parser("sample", help="autoregressive samples from one start frame, as a packed-format file")
    _common(s)
    s.add_argument("--start", required=True, help="packed dataset holding the start frame")
    s.add_argument("--sequence", default=None, help="start sequence id (default: the first)")
    s.add_argument("--frame", type=non_negative_int, default=0, help="start frame of that sequence (default 0)")
    s.add_argument("--n-samples", type=positive_int, default=8, help="samples (default 8)")
    s.add_argument("--out", required=True, help="output .h5 (neuface.dataset format)")
    s.set_defaults(func=_sample)
    e = actions.add_parser("eval", help="FD / APD / stability / one-step NLL on held-out packed data")
    _common(e)
    e.add_argument("--test", action="append", required=True, help="held-out packed dataset (repeatable)")
    e.add_argument("--own-test", action="append", default=[],
                   help="held-out packed data of the kind the prior was trained on (e.g. its annotator's test split "
                        "when --test is the true motion): an extra one-step NLL against constant velocity "
                        "(repeatable)")
    e.add_argument("--label", required=True, help="name of this prior in the report")
    e.add_argument("--out", required=True, help="output JSON")
    e.add_argument("--n-samples", type=positive_int, default=50, help="samples per start state (default 50)")
    e.add_argument("--n-starts", type=positive_int, default=4, help="start states (default 4)")
    e.add_argument("--window-s", type=positive_float, default=1.0, help="FD feature window, s (default 1)")
    e.set_defaults(func=_eval)


def _sample(args: argparse.Namespace) -> int:
    import h5py
    import torch

    from neuface.cli.argtypes import resolve_device_name
    from neuface.dataset.pack import sha256_file
    from neuface.dataset.schema import attr_str_list
    from neuface.errors import NeufaceError
    from neuface.fitting.forward import resolve_device
    from neuface.flame import FlameLayer
    from neuface.train.motion_prior import load_motion_prior
    from neuface.train.motion_sample import n_rollout_steps, pick_start, rollout, write_samples
    from neuface.train.motion_state import states_from_packed

    prior = load_motion_prior(args.prior)
    flame = FlameLayer.from_files(args.flame, args.embedding, n_shape=int(prior.config.get("n_shape", 100)),
                                  n_exp=prior.layout.n_exp, dtype=torch.float64)
    views = prior.lineage.get("settings", {}).get("views", "front")
    segments, _ = states_from_packed([args.start], flame, views="front" if views == "all" else views)
    seg, row = pick_start(segments, args.sequence, args.frame)
    with h5py.File(args.start, "r") as f:
        g = f["sequences"][seg.sequence]
        vi = attr_str_list(g.attrs["views"]).index(seg.view)
        frame = seg.start + row
        cam, crop = g["cam"][frame, vi], g["crop_transforms"][frame, vi]
        flame_sha = str(f.attrs.get("flame_sha256", ""))
    steps = n_rollout_steps(args.seconds, seg.fps)
    generator = torch.Generator().manual_seed(args.seed)
    samples = rollout(prior, seg.states[row][None], seg.fps, steps, args.n_samples, generator, clamp=args.clamp,
                      device=resolve_device(resolve_device_name(args.device)))[0]
    if not torch.isfinite(samples).all():  # never write zeros in place of a failed generation
        raise NeufaceError(f"{args.prior}: some samples diverged to non-finite values; nothing written to {args.out}")
    write_samples(args.out, samples, prior.layout, seg.shape, seg.fps, flame, cam, crop,
                  {"flame_sha256": flame_sha, "prior": str(args.prior), "prior_sha256": sha256_file(args.prior),
                   "seed": int(args.seed), "start_dataset": str(args.start), "start_sequence": seg.sequence,
                   "start_view": seg.view, "start_frame": int(frame), "clamp": bool(args.clamp)})
    return 0


def _eval(args: argparse.Namespace) -> int:
    from neuface.cli.argtypes import resolve_device_name
    from neuface.io_utils import atomic_path, finite_or_null
    from neuface.train.motion_sample import evaluate_prior

    result = evaluate_prior(args.prior, args.test, args.flame, args.embedding, args.label, seconds=args.seconds,
                            n_samples=args.n_samples, n_starts=args.n_starts, seed=args.seed,
                            device=resolve_device_name(args.device), clamp=args.clamp, window_s=args.window_s,
                            own_test_paths=args.own_test)
    with atomic_path(args.out, suffix=".json") as tmp:
        tmp.write_text(json.dumps(finite_or_null(result), indent=2, allow_nan=False) + "\n")
    log.info("%s: FD %s (train vs test %s), APD %s cm, stable %s, one-step NLL %.3f vs constant velocity %.3f",
             args.label, result["fd"], result["fd_train_vs_test"], result["apd_cm"], result["stable"],
             result["one_step_nll"], result["const_velocity_nll"])
    return 0
