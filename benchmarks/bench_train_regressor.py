"""Regressor fine-tuning throughput: ``finetune_regressor`` samples/s against a plain PyTorch loop, same run.

Input: the default synthetic kit and its shipped builtin encoder; 4 rendered sequences (224-px crops; 2 views
× 12 frames and 3 × 12 frames mono; quick: 2 × 4 frames) annotated with their ground truth and packed with the
project's own writers. ``finetune_regressor`` runs ``steps`` steps at batch ``B`` (CPU, float32, BatchNorm frozen,
no validation, no checkpoint); its figure is the loop's samples/s (recorded in the lineage: data loading from
the crops files, the step, the bookkeeping). Reference: a plain loop of the same model and batch on tensors already
in memory — forward, FLAME of prediction and target, 2D + mesh + 3D-landmark loss, backward, Adam — so
``ratio`` is the share of the bare compute rate that the trainer keeps (1 = no overhead).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("benchmarks.bench_train_regressor")


def _packed_set(tmp: Path, flame, model_path: Path, quick: bool) -> Path:
    """Rendered sequences + GT annotation fits → one packed split; crops under ``tmp/crops``."""
    from neuface.dataset.fake import write_fit_file
    from neuface.dataset.filter import FilterThresholds, filter_fits, write_manifest
    from neuface.dataset.pack import pack_split, sha256_file
    from neuface.fitting.demo_data import write_synthetic_sequence

    n_frames = 4 if quick else 12
    specs = [("b0", ("front", "left_30")), ("b1", ("front",))] + ([] if quick else [("b2", ("front",)),
                                                                                   ("b3", ("front",))])
    fits = []
    for i, (name, views) in enumerate(specs):
        seq = write_synthetic_sequence(tmp / "work" / name, flame, n_frames=n_frames, views=views, size=224,
                                       seed=i, sequence=name)
        (tmp / "crops").mkdir(exist_ok=True)
        seq.crops.rename(tmp / "crops" / f"{name}.h5")
        p = seq.params
        tr = np.tile(np.eye(3), (n_frames, len(views), 1, 1))
        arrays = {**{k: p[k] for k in ("shape", "expression", "global_pose", "pose", "cam")},
                  "crop_transforms": tr, "landmarks": seq.landmarks_gt.astype(np.float32),
                  "detected": np.ones((n_frames, len(views)), bool),
                  "landmarks_pred": seq.landmarks_gt.astype(np.float32)}
        fits.append(write_fit_file(tmp / "fits" / f"{name}.h5", name, arrays, views=list(views),
                                   flame_sha256=sha256_file(model_path)))
    th = FilterThresholds(max_nme=100.0)
    manifest = write_manifest(filter_fits(fits, {n: "train" for n, _ in specs}, "neuface", th), tmp / "m.tsv", th,
                              "neuface")
    pack_split(manifest, "train", tmp / "train.h5", flame=model_path)
    return tmp / "train.h5"


def plain_loop_rate(encoder, flame, batch: dict, steps: int, lr: float) -> float:
    """Samples/s of a bare loop on one in-memory batch: forward, FLAME ×2, losses, backward, Adam."""
    from neuface.fitting.losses import landmark_loss
    from neuface.geometry.camera import weak_perspective_project

    opt = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=lr)
    best = float("inf")
    for i in range(steps + 1):
        t0 = time.perf_counter()
        out = encoder(batch["image"])
        fl = flame(out.shape, out.expression, out.global_pose, out.pose12())
        with torch.no_grad():
            tgt = flame(batch["shape"], batch["expression"], batch["global_pose"], batch["pose"])
        lmk = weak_perspective_project(fl.landmarks2d, out.cam)[..., :2]
        loss = landmark_loss(lmk, batch["landmarks"], batch["landmarks_valid"]) \
            + 0.01 * ((fl.vertices - tgt.vertices) * 1000).square().sum(-1).mean() \
            + 0.01 * ((fl.landmarks3d - tgt.landmarks3d) * 1000).square().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i > 0:  # the first step warms up
            best = min(best, time.perf_counter() - t0)
    return batch["image"].shape[0] / best


def run(quick: bool = False) -> list[dict]:
    """One row ``{name, value, unit, reference, ratio}`` (module docstring)."""
    from neuface.encoders.builtin import load_builtin
    from neuface.encoders.shipped import SHIPPED_DIR
    from neuface.flame import FlameLayer
    from neuface.flame.io import write_flame_pickle, write_landmark_embedding
    from neuface.synthetic.kit import generate
    from neuface.train.regressor import finetune_regressor
    from neuface.train.regressor_data import RegressorFrames
    from neuface.train.regressor_settings import RegressorSettings

    batch_size, steps = (4, 3) if quick else (16, 20)
    weights = SHIPPED_DIR / "builtin-kit-seed0.pt"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model, emb = generate(0)
        model_path = write_flame_pickle(model, tmp / "flame.pkl")
        emb_path = write_landmark_embedding(emb, tmp / "emb.npy")
        flame = FlameLayer(model, emb)
        dataset = _packed_set(tmp, flame, model_path, quick)
        st = RegressorSettings(steps=steps, batch_size=batch_size, device="cpu", progress=False, checkpoint_every=0)
        res = finetune_regressor(st, [dataset], tmp / "crops", model_path, emb_path, "builtin", weights,
                                 tmp / "out.pt")
        rate = float(res.lineage["samples_per_s"])
        data = RegressorFrames([dataset], tmp / "crops")
        items = [data[i] for i in range(batch_size)]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "index"}
        encoder = load_builtin(weights).train().freeze_batchnorm()
        ref = plain_loop_rate(encoder, flame, batch, max(2, steps // 4), st.resolved("builtin").lr)
    return [{"name": f"train regressor builtin B={batch_size} cpu f32 (ref = plain loop, same model/batch)",
             "value": rate, "unit": "samples/s", "reference": ref, "ratio": rate / ref}]
