"""``neuface encoder``: pre-train the builtin encoder, or check/describe an encoder's weights.

* ``neuface encoder pretrain --flame MODEL --embedding EMB --out resources/encoders/builtin.pt
  [--steps N --batch-size B --pool-size P --lr LR --seed S --device DEV|auto]`` trains the small ``builtin`` encoder
  on rendered faces of the given head model (defaults: 1-3 min on a 2-core CPU; pass more steps on a GPU).
* ``neuface encoder info --kind {deca,emoca,builtin} WEIGHTS`` loads the weights strictly and prints a JSON
  summary (encoder id, parameter count, builtin config).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

from neuface.cli.argtypes import non_negative_int, positive_int, resolve_device_name

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from neuface.pretrain_settings import PretrainSettings

    d = PretrainSettings()
    parser = sub.add_parser("encoder", help="pre-train the builtin encoder; inspect encoder weights")
    enc_sub = parser.add_subparsers(dest="encoder_command", metavar="ACTION", required=True)
    pre = enc_sub.add_parser("pretrain", help="train the builtin encoder on rendered faces of a FLAME model",
                             description="Train the small builtin encoder on faces of MODEL rendered in crop space.")
    pre.add_argument("--flame", required=True, help="FLAME-format head model (.pkl or .npz)")
    pre.add_argument("--embedding", required=True, help="DECA-format landmark_embedding.npy")
    pre.add_argument("--out", required=True, help="output file (e.g. resources/encoders/builtin.pt)")
    pre.add_argument("--steps", type=positive_int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    pre.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                     help=f"images per step (default {d.batch_size})")
    pre.add_argument("--pool-size", type=non_negative_int, default=d.pool_size,
                     help=f"faces rendered once and reused with augmentation; 0 renders every batch afresh "
                          f"(default {d.pool_size})")
    pre.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    pre.add_argument("--seed", type=non_negative_int, default=d.seed, help=f"random seed (default {d.seed})")
    pre.add_argument("--param-weight", type=float, default=d.w_params,
                     help="weight of the parameter (3D) supervision: pose, jaw, β and the leading ψ of the rendered "
                          "faces; 0 trains from the 2D landmark loss alone, like an encoder that never saw 3D labels "
                          f"(default {d.w_params})")
    pre.add_argument("--prior-weight", type=float, default=d.w_prior,
                     help="weight of the β/ψ prior ||β||² + ||ψ||² per image (DECA's regularisers); a 2D-only base "
                          f"needs it to keep identities inside the FLAME prior (default {d.w_prior})")
    pre.add_argument("--device", default="cpu",
                     help="torch device, or auto: cuda if this process sees a GPU, else cpu (default cpu)")
    pre.add_argument("--no-shipped", action="store_true",
                     help="always train, even when the package ships weights for this model and these settings")
    pre.add_argument("--record", default=None, metavar="JSON",
                     help="also write a shipped-weights record (model hashes, settings, this command) for --out")
    pre.set_defaults(func=_pretrain)
    info = enc_sub.add_parser("info", help="load encoder weights strictly and print a JSON summary")
    info.add_argument("--kind", required=True, choices=("deca", "emoca", "builtin"), help="encoder kind")
    info.add_argument("weights", help="weights file")
    info.set_defaults(func=_info)


def _pretrain(args: argparse.Namespace) -> int:
    import torch

    from neuface.encoders.builtin import save_builtin
    from neuface.encoders.checkpoint import file_sha256
    from neuface.encoders.pretrain import PretrainSettings, pretrain_builtin, settings_record
    from neuface.encoders.shipped import find_shipped, install_shipped, model_key
    from neuface.errors import NeufaceError
    from neuface.flame.layer import FlameLayer
    from neuface.io_utils import atomic_path

    if args.steps < 1 or args.batch_size < 1:
        raise NeufaceError("--steps and --batch-size must be >= 1")
    for flag, value in (("--param-weight", args.param_weight), ("--prior-weight", args.prior_weight)):
        if not (value >= 0 and math.isfinite(value)):
            raise NeufaceError(f"{flag} must be a finite number >= 0, got {value}")
    try:
        device = torch.device(resolve_device_name(args.device))
    except RuntimeError as exc:
        raise NeufaceError(f"bad --device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NeufaceError("--device cuda requested but CUDA is not available")
    settings = PretrainSettings(steps=args.steps, batch_size=args.batch_size, pool_size=args.pool_size,
                                lr=args.lr, seed=args.seed, w_params=args.param_weight,
                                w_prior=args.prior_weight)
    key = model_key(args.flame, args.embedding)
    shipped = None if args.no_shipped else find_shipped(key, settings_record(settings))
    if shipped is not None:
        install_shipped(shipped, args.out)
        log.info("the package ships weights pre-trained on this head model with these settings: copied %s to %s "
                 "(--no-shipped trains instead)", shipped, args.out)
        return 0
    flame = FlameLayer.from_files(args.flame, args.embedding).to(device)
    t0 = time.perf_counter()
    model, history = pretrain_builtin(flame, settings)
    n_tail = max(1, len(history["landmarks"]) // 10)
    training = {
        "settings": settings_record(settings),
        "flame_sha256": file_sha256(args.flame),
        "embedding_sha256": file_sha256(args.embedding),
        "device": str(device),
        "torch_version": str(torch.__version__),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "final_landmark_l1_ndc": sum(history["landmarks"][-n_tail:]) / n_tail,
        "final_total_loss": sum(history["total"][-n_tail:]) / n_tail,
    }
    save_builtin(model.to("cpu"), args.out, training)
    if args.record:
        record = {**key, "settings": settings_record(settings), "weights": Path(args.out).name,
                  "weights_sha256": file_sha256(args.out), "wall_time_s": training["wall_time_s"],
                  "torch_version": training["torch_version"], "device": training["device"],
                  "command": _command(args)}
        with atomic_path(args.record, suffix=".json") as tmp:
            tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s (landmark L1 %.4f NDC over the last %d steps, %.0f s)", args.out,
             training["final_landmark_l1_ndc"], n_tail, training["wall_time_s"])
    return 0


def _command(args: argparse.Namespace) -> str:
    """The ``neuface encoder pretrain`` command that reproduces this training (every setting explicit)."""
    parts = ["neuface", "encoder", "pretrain", "--flame", args.flame, "--embedding", args.embedding, "--out",
             args.out, "--steps", args.steps, "--batch-size", args.batch_size, "--pool-size", args.pool_size,
             "--lr", args.lr, "--seed", args.seed, "--param-weight", args.param_weight, "--prior-weight",
             args.prior_weight, "--device", args.device, "--no-shipped"]
    return " ".join(shlex.quote(str(p)) for p in parts)


def _info(args: argparse.Namespace) -> int:
    from neuface.encoders import load_encoder
    from neuface.encoders.builtin import read_builtin_config

    model = load_encoder(args.kind, args.weights, "cpu")
    summary = {"kind": args.kind, "encoder_id": model.encoder_id,
               "parameters": sum(p.numel() for p in model.parameters())}
    if args.kind == "builtin":
        summary["config"] = read_builtin_config(args.weights)
    sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0
