"""``finetune_regressor``: fine-tune a FLAME encoder on packed NeuFace annotations (paper §5.2, Table 5).

Loss per batch of frames (:func:`regressor_losses`)::

    L = λ_2D · L_lmk2D + λ_M3D · L_M3D + λ_J3D · L_J3D

* L_lmk2D: NeuFace's masked L1 (:func:`neuface.fitting.losses.landmark_loss`) between the encoder's projected
  68 landmarks (dynamic contour, crop NDC) and the packed detections mapped to crop NDC.
* L_M3D / L_J3D (:mod:`neuface.train.losses3d`): mean squared distance (mm²) between the posed FLAME mesh /
  68 3D landmarks of the encoder output and of the packed annotation FLAME(β, ψ, r, θ) (global rotation applied,
  no camera). ``use_3d=False`` drops both (the paper's DECA_NeuFace,2D); they are still computed without a graph
  and logged, so the two variants' curves compare.

Adam over every trainable weight, BatchNorm frozen by default (see :class:`RegressorSettings`), batches drawn
from a seeded permutation per epoch (:class:`StepBatches`: the batch of step s depends only on the seed and s).
Checkpoints every ``checkpoint_every`` steps and on SIGTERM (:mod:`neuface.fitting.checkpoint`), keyed by the
settings and the sha256 of every input file; a resumed deterministic run equals an uninterrupted one exactly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, Subset
from tqdm import tqdm

from neuface import __version__
from neuface.encoders import load_encoder
from neuface.encoders.base import EncoderOutput, FlameEncoder
from neuface.encoders.checkpoint import cpu_state_dict, file_sha256
from neuface.errors import NeufaceError
from neuface.fitting.checkpoint import Checkpointer, StopSignal
from neuface.fitting.forward import autocast, deterministic_mode, resolve_device
from neuface.fitting.losses import landmark_loss
from neuface.flame import FlameLayer
from neuface.geometry.camera import weak_perspective_project
from neuface.io_utils import atomic_path
from neuface.metrics.core import MM_PER_M
from neuface.train.losses3d import landmark3d_loss, mesh_loss
from neuface.train.regressor_data import RegressorFrames
from neuface.train.regressor_output import lineage_path, read_lineage, save_finetuned, write_lineage
from neuface.train.regressor_settings import RegressorSettings

log = logging.getLogger(__name__)

__all__ = ["FinetuneResult", "StepBatches", "finetune_regressor", "regressor_losses", "CURVE_COLUMNS"]

LOSS_NAMES = ("total", "l2d", "m3d", "j3d")
CURVE_COLUMNS = ("step", *LOSS_NAMES, "lr", *(f"val_{k}" for k in LOSS_NAMES))
CHECKPOINT_KIND = "train-regressor"
LINEAGE_FORMAT = "neuface.train.regressor"


class StepBatches(Sampler):
    """Item indices of the batches of steps ``[start, stop)``.

    Epoch e is ``randperm(n)`` of a generator seeded with ``seed + e``; epochs are concatenated and step s takes
    positions ``[s·B, (s+1)·B)``, so a batch depends only on ``(n, B, seed, s)`` (a resumed run sees the batches
    the uninterrupted run would have).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int) -> None:
        if n < 1:
            raise NeufaceError("no training items")
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _index(self, position: int) -> int:
        epoch, rest = divmod(position, self.n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return int(self._perm[rest])

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield [self._index(p) for p in range(step * self.batch_size, (step + 1) * self.batch_size)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


@dataclass
class FinetuneResult:
    """``out`` weights file, ``lineage`` record, per-step ``history`` (curve rows), the trained ``encoder``."""

    out: Path
    lineage: dict[str, Any]
    history: list[dict[str, float]]
    encoder: FlameEncoder


def regressor_losses(pred: EncoderOutput, batch: dict[str, torch.Tensor], flame: FlameLayer,
                     settings: RegressorSettings) -> dict[str, torch.Tensor]:
    """Named scalar losses (``total``, ``l2d``, ``m3d``, ``j3d``) of encoder outputs against a batch of targets.

    Args:
        pred: encoder outputs for B images (float32).
        batch: targets on ``flame``'s device, as :class:`~neuface.train.regressor_data.RegressorFrames` items
            collated: ``shape`` (B, n_shape), ``expression`` (B, n_exp), ``global_pose`` (B, 3), ``pose`` (B, 12),
            ``landmarks`` (B, 68, 2) crop NDC, ``landmarks_valid`` (B, 68), ``valid`` (B,).
        flame: FLAME layer with a landmark embedding.
    """
    fl = flame(shape=pred.shape[:, : flame.n_shape], expression=pred.expression[:, : flame.n_exp],
               global_pose=pred.global_pose, pose=pred.pose12())
    lmk = weak_perspective_project(fl.landmarks2d, pred.cam)[..., :2]
    l2d = landmark_loss(lmk, batch["landmarks"], batch["landmarks_valid"])
    own_identity = settings.identity_3d == "predicted"
    canonical = settings.pose_3d == "canonical"
    with torch.no_grad():
        tgt = flame(shape=pred.shape[:, : flame.n_shape] if own_identity else batch["shape"],
                    expression=batch["expression"],
                    global_pose=torch.zeros_like(batch["global_pose"]) if canonical else batch["global_pose"],
                    pose=batch["pose"])
    valid = batch["valid"]
    with torch.set_grad_enabled(torch.is_grad_enabled() and settings.use_3d):
        fl3 = fl
        if own_identity or canonical:
            # own identity: the same β on both sides and no gradient to it (no identity supervision in 3D);
            # canonical: no global rotation on either side (head pose is left to the 2D term)
            beta = pred.shape[:, : flame.n_shape]
            fl3 = flame(shape=beta.detach() if own_identity else beta, expression=pred.expression[:, : flame.n_exp],
                        global_pose=torch.zeros_like(pred.global_pose) if canonical else pred.global_pose,
                        pose=pred.pose12())
        m3d = mesh_loss(fl3.vertices * MM_PER_M, tgt.vertices * MM_PER_M, valid)
        j3d = landmark3d_loss(fl3.landmarks3d * MM_PER_M, tgt.landmarks3d * MM_PER_M, valid)
    total = settings.lambda_l2d * l2d
    if settings.use_3d:
        total = total + settings.lambda_m3d * m3d + settings.lambda_j3d * j3d
    return {"total": total, "l2d": l2d, "m3d": m3d, "j3d": j3d}


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _encode(encoder: FlameEncoder, images: torch.Tensor, device: torch.device, amp: bool) -> EncoderOutput:
    with autocast(device, amp):
        out = encoder(images)
    return EncoderOutput(**{k: v.float() for k, v in vars(out).items()}) if amp else out


@torch.no_grad()
def validation_losses(encoder: FlameEncoder, flame: FlameLayer, data: RegressorFrames, settings: RegressorSettings,
                      device: torch.device) -> dict[str, float]:
    """Mean losses over the first ``val_max_items`` frames of ``data`` (eval mode; the mode is restored)."""
    was_training = encoder.training
    encoder.eval()
    n = len(data) if settings.val_max_items == 0 else min(len(data), settings.val_max_items)
    loader = DataLoader(Subset(data, range(n)), batch_size=settings.batch_size, num_workers=settings.workers)
    sums = dict.fromkeys(LOSS_NAMES, 0.0)
    for batch in loader:
        batch = _to(batch, device)
        parts = regressor_losses(_encode(encoder, batch["image"], device, settings.amp), batch, flame, settings)
        for k in LOSS_NAMES:
            sums[k] += float(parts[k]) * batch["image"].shape[0]
    encoder.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()}


def _config_hash(settings: RegressorSettings, kind: str) -> str:
    text = json.dumps({"settings": settings.fingerprint_record(), "encoder_kind": kind}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def input_digests(datasets: list, val_datasets: list, encoder_weights, flame_path, embedding_path) -> dict[str, str]:
    """sha256 of every input file, by role (the checkpoint key besides the settings; recorded in the lineage)."""
    digests = {f"dataset[{i}]": file_sha256(p) for i, p in enumerate(datasets)}
    digests.update({f"val_dataset[{i}]": file_sha256(p) for i, p in enumerate(val_datasets)})
    digests.update(encoder_weights=file_sha256(encoder_weights), flame=file_sha256(flame_path),
                   embedding=file_sha256(embedding_path))
    return digests


def write_curve(path: str | os.PathLike | None, history: list[dict[str, float]]) -> None:
    """Write the loss curve CSV (:data:`CURVE_COLUMNS`; empty cells where a value was not computed), atomically."""
    if path is None:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (int(v) if k == "step" else f"{v:.8g}") for k, v in row.items()})
    with atomic_path(path, suffix=".csv") as tmp:
        tmp.write_text(buf.getvalue())


def finetune_regressor(settings: RegressorSettings, datasets: list[str | os.PathLike], crops_dir: str | os.PathLike,
                       flame_path: str | os.PathLike, embedding_path: str | os.PathLike, encoder_kind: str,
                       encoder_weights: str | os.PathLike, out: str | os.PathLike,
                       val_datasets: list[str | os.PathLike] | None = None,
                       checkpoint: str | os.PathLike | None = None, curve: str | os.PathLike | None = None,
                       stop: StopSignal | None = None) -> FinetuneResult:
    """Fine-tune encoder ``encoder_kind`` loaded (strictly) from ``encoder_weights`` and write it to ``out``.

    Writes ``out`` in the loader's format of that kind (:mod:`neuface.train.regressor_output`), the lineage record
    ``<out>.json``, and the loss curve ``curve`` (CSV) when given; the checkpoint is deleted at success.

    Raises:
        NeufaceError: bad settings or inputs (missing / stale crops, unreadable datasets, non-finite loss).
        Preempted: SIGTERM was received (``stop``); a checkpoint was written when ``checkpoint`` is set.
    """
    settings = settings.resolved(encoder_kind)
    val_datasets = list(val_datasets or [])
    t_start = time.perf_counter()
    device = resolve_device(settings.device)
    data = RegressorFrames(list(datasets), crops_dir, settings.skip_missing)
    val = RegressorFrames(val_datasets, crops_dir, settings.skip_missing) if val_datasets else None
    log.info("training on %s%s", data.describe(), f"; validating on {val.describe()}" if val else "")
    digests = input_digests(list(datasets), val_datasets, encoder_weights, flame_path, embedding_path)
    flame = FlameLayer.from_files(flame_path, embedding_path, n_shape=data.n_shape, n_exp=data.n_exp).to(device)
    encoder = load_encoder(encoder_kind, encoder_weights, device)
    base_id = encoder.encoder_id
    if settings.freeze_batchnorm:
        encoder.freeze_batchnorm(freeze_affine=False)
    encoder.train()
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    every = settings.checkpoint_every or settings.steps + 1
    ckpt = Checkpointer(checkpoint, every, _config_hash(settings, encoder_kind), CHECKPOINT_KIND, stop, digests)
    history: list[dict[str, float]] = []
    start = 0
    payload = ckpt.load()
    if payload is not None:
        encoder.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        history, start = list(payload["history"]), int(payload["step"])
    log_every = max(1, settings.steps // 10)
    bar = tqdm(total=settings.steps, initial=start, desc="train regressor", unit="step",
               disable=not settings.progress, leave=False)

    def make_payload() -> dict[str, Any]:
        write_curve(curve, history)
        return {"model": cpu_state_dict(encoder), "optimizer": opt.state_dict(), "history": history}

    t_loop = time.perf_counter()
    with deterministic_mode(settings.deterministic, settings.seed):
        loader = DataLoader(data, batch_sampler=StepBatches(len(data), settings.batch_size, settings.seed, start,
                                                            settings.steps),
                            num_workers=settings.workers, pin_memory=device.type == "cuda")
        try:
            for step, batch in enumerate(loader, start=start + 1):
                batch = _to(batch, device)
                parts = regressor_losses(_encode(encoder, batch["image"], device, settings.amp), batch, flame,
                                         settings)
                if not torch.isfinite(parts["total"]):
                    raise NeufaceError(f"fine-tuning diverged at step {step} (loss {float(parts['total'])}); "
                                       "lower --lr")
                opt.zero_grad(set_to_none=True)
                parts["total"].backward()
                if settings.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
                opt.step()
                row = {"step": step, **{k: float(parts[k].detach()) for k in LOSS_NAMES},
                       "lr": opt.param_groups[0]["lr"]}
                if val is not None and ((settings.val_every and step % settings.val_every == 0)
                                        or step == settings.steps):
                    row.update({f"val_{k}": v for k, v in
                                validation_losses(encoder, flame, val, settings, device).items()})
                history.append(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['total']:.4g}")
                if step % log_every == 0 or step == settings.steps:
                    log.info("step %d/%d: total %.4g l2d %.4g m3d %.4g mm² j3d %.4g mm²%s", step, settings.steps,
                             row["total"], row["l2d"], row["m3d"], row["j3d"],
                             f" (val total {row['val_total']:.4g})" if "val_total" in row else "")
                ckpt.after_step(step, make_payload)
        finally:
            bar.close()
    n_run = max(1, settings.steps - start)
    wall = time.perf_counter() - t_start
    lineage = build_lineage(settings, data, val, digests, encoder_kind, encoder_weights, base_id, flame_path,
                            embedding_path, history, wall, n_run * settings.batch_size / (time.perf_counter() - t_loop),
                            device)
    save_finetuned(encoder.eval(), encoder_kind, encoder_weights, out, lineage)
    loaded = load_encoder(encoder_kind, out, "cpu")  # the output must load strictly
    if loaded.encoder_id == base_id:
        raise NeufaceError(f"the fine-tuned encoder id equals the base's ({base_id})")
    record = {**lineage, "encoder": {"kind": encoder_kind, "path": str(out), "sha256": file_sha256(out),
                                     "encoder_id": loaded.encoder_id}}
    write_lineage(out, record)
    write_curve(curve, history)
    ckpt.done()
    log.info("fine-tuned %s -> %s (%s) in %.0f s; lineage %s", base_id, out, loaded.encoder_id, wall,
             lineage_path(out))
    return FinetuneResult(Path(out), record, history, encoder)


def build_lineage(settings: RegressorSettings, data: RegressorFrames, val: RegressorFrames | None,
                  digests: dict[str, str], kind: str, weights, base_id: str, flame_path, embedding_path,
                  history: list[dict[str, float]], wall_s: float, samples_per_s: float, device) -> dict[str, Any]:
    """The lineage record (docs/training.md): datasets, base encoder, assets, settings, progress, versions."""
    def datasets(frames: RegressorFrames | None, role: str) -> list[dict[str, Any]]:
        if frames is None:
            return []
        return [{**asdict(info), "sha256": digests[f"{role}[{i}]"]} for i, info in enumerate(frames.infos)]

    last = history[-1] if history else {}
    val_rows = [r for r in history if "val_total" in r]
    return {
        "format": LINEAGE_FORMAT, "format_version": 1,
        "datasets": datasets(data, "dataset"), "val_datasets": datasets(val, "val_dataset"),
        "base_encoder": {"kind": kind, "path": str(weights), "sha256": digests["encoder_weights"],
                         "encoder_id": base_id, "lineage": read_lineage(weights)},
        "flame": {"path": str(flame_path), "sha256": digests["flame"]},
        "embedding": {"path": str(embedding_path), "sha256": digests["embedding"]},
        "settings": settings.record(),
        "steps_done": int(last.get("step", 0)),
        "final_losses": {k: last[k] for k in LOSS_NAMES if k in last},
        "final_val_losses": ({k: val_rows[-1][f"val_{k}"] for k in LOSS_NAMES} if val_rows else None),
        "n_train_frames": len(data), "wall_time_s": round(wall_s, 3),
        "samples_per_s": round(samples_per_s, 3) if math.isfinite(samples_per_s) else None,
        "device": str(device), "torch_version": torch.__version__, "neuface_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
