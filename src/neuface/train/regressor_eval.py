"""Per-frame evaluation of an encoder in the spirit of the paper's Table 5: ``regress`` on held-out sequences.

For every sequence of a sample sheet (optionally one split) whose crops and landmarks files exist, the ``regress``
annotator runs once per frame and view (:func:`neuface.fitting.api.run_fit` with the given encoder, fits written to
``fits_dir`` or a temporary directory) and :func:`neuface.metrics.sequence_metrics` scores the fit:

* ``nme``: bounding-box NME (%) of the projected landmarks against the detections (every sequence);
* with the sheet's ``ground_truth`` (``neuface synth`` ``.npz``): ``nme_gt`` against the true landmarks and the
  per-(frame, view) similarity-aligned MPVE in mm (``sequence_metrics(..., per_sample=...)``: the samples whose
  mean over a sequence is that sequence's ``mpve_aligned``), and its two parts: ``mpve_identity_mm`` (the
  predicted β's neutral mesh vs the true β's) and ``mpve_expression_mm`` (predicted ψ and pose on the true β vs
  the true mesh), so a change of the total can be traced to identity or to expression.

Summary: aligned MPVE pooled over every (frame, view) sample of the GT sequences (median / mean / std, as the
paper's Table 5 reports), NME and NME-GT as mean / std over sequences. Sequences without ground truth (a real
clip) report NME only. Output format: docs/training.md ("Evaluation JSON").
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from neuface.encoders import load_encoder
from neuface.encoders.checkpoint import file_sha256
from neuface.errors import NeufaceError
from neuface.flame import FlameLayer
from neuface.metrics.sequence import gt_pixel_scale_of_crops, sequence_metrics
from neuface.train.regressor_output import read_lineage

log = logging.getLogger(__name__)

__all__ = ["EVAL_FORMAT", "evaluate_regressor", "summarise"]

EVAL_FORMAT = "neuface.eval.regressor"
EVAL_VERSION = 1
#: per-sample GT errors pooled over sequences (``sequence_metrics(per_sample=...)`` keys; ``<key>_mm`` in the JSON)
POOLED = ("mpve_aligned", "mpve_identity", "mpve_expression")


def _stats(values: list[float] | np.ndarray, median: bool = True) -> dict[str, float] | None:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None
    res = {"mean": float(arr.mean()), "std": float(arr.std())}
    return {"median": float(np.median(arr)), **res} if median else res


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _sheet_sequences(sheet: str | os.PathLike, split: str | None) -> list[tuple[str, str | None]]:
    """(sequence, ground truth path or None) of the sheet's sequences (of ``split``), in sheet order."""
    from neuface.sheets import read_sheet

    df = read_sheet(sheet)
    if split is not None:
        df = df[df["split"] == split]
    out: dict[str, str | None] = {}
    for _, row in df.iterrows():
        gt = str(row.get("ground_truth", "") or "").strip() or None
        if row["sequence"] not in out or (out[row["sequence"]] is None and gt):
            out[row["sequence"]] = gt
    return list(out.items())


def evaluate_regressor(sheet: str | os.PathLike, crops_dir: str | os.PathLike, landmarks_dir: str | os.PathLike,
                       flame_path: str | os.PathLike, embedding_path: str | os.PathLike, kind: str,
                       weights: str | os.PathLike, label: str, split: str | None = None,
                       fits_dir: str | os.PathLike | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run ``regress`` with the encoder on the sheet's sequences and score it (module docstring).

    Returns:
        The evaluation record (``format`` ``neuface.eval.regressor``); sequences lacking a crops or landmarks
        file are left out with a warning, a failed fit is listed with its ``status`` and ``reason``.
    Raises:
        NeufaceError: unreadable sheet / encoder / assets, or no sequence to evaluate.
    """
    from neuface.fitting.api import run_fit
    from neuface.fitting.config import resolve_annotator
    from neuface.fitting.forward import resolve_device

    dev = resolve_device(device)
    sequences = _sheet_sequences(sheet, split)
    if not sequences:
        raise NeufaceError(f"{sheet} has no sequence{f' in split {split!r}' if split else ''}")
    crops_dir, landmarks_dir = Path(crops_dir), Path(landmarks_dir)
    encoder = load_encoder(kind, weights, dev)
    flame = FlameLayer.from_files(flame_path, embedding_path, n_shape=100, n_exp=50)
    settings = resolve_annotator("regress", {"encoder": kind, "encoder_weights": str(weights), "device": str(dev),
                                             "progress": False})
    rows: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in POOLED}
    with contextlib.ExitStack() as stack:
        out_dir = Path(fits_dir) if fits_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for name, gt in sequences:
            crops, lmk = crops_dir / f"{name}.h5", landmarks_dir / f"{name}.h5"
            if not (crops.is_file() and lmk.is_file()):
                log.warning("eval-regressor: %s has no crops or landmarks file (%s, %s); left out", name, crops, lmk)
                continue
            if gt is not None and not Path(gt).is_file():
                raise NeufaceError(f"ground truth {gt} of sequence {name} does not exist")
            fit_path = out_dir / f"{name}.h5"
            status = run_fit(crops, lmk, flame_path, embedding_path, "regress", settings, fit_path, encoder=encoder)
            if not status.ok:
                rows.append({"sequence": name, "status": "failed", "reason": status.reason, "n_frames": 0,
                             "n_views": 0, "has_gt": gt is not None, **{f"{k}_mm": None for k in POOLED},
                             "nme": None, "nme_gt": None})
                continue
            scale = gt_pixel_scale_of_crops(gt, crops) if gt else None
            per_sample: dict[str, np.ndarray] = {}  # the (F, V) aligned MPVE, pooled over sequences below
            m = sequence_metrics(fit_path, flame, gt_path=gt, gt_pixel_scale=scale, per_sample=per_sample)
            row = {"sequence": name, "status": "ok", "n_frames": m["n_frames"], "n_views": m["n_views"],
                   "has_gt": gt is not None, **{f"{k}_mm": None for k in POOLED}, "nme": _finite(m["metrics"]["nme"]),
                   "nme_gt": _finite(m["metrics"]["nme_gt"]) if gt else None}
            if gt is not None:
                for key in POOLED:
                    pooled[key].append(per_sample[key].ravel())
                    row[f"{key}_mm"] = _stats(per_sample[key])
            rows.append(row)
            log.info("eval-regressor %s %s: NME %s%%, MPVE %s mm", label, name, row["nme"],
                     None if row["mpve_aligned_mm"] is None else round(row["mpve_aligned_mm"]["mean"], 3))
    if not any(r["status"] == "ok" for r in rows):
        raise NeufaceError(f"no sequence of {sheet} could be evaluated (crops/landmarks in {crops_dir}, "
                           f"{landmarks_dir})")
    return {"format": EVAL_FORMAT, "format_version": EVAL_VERSION, "label": label,
            "encoder": {"kind": kind, "weights": str(weights), "sha256": file_sha256(weights),
                        "encoder_id": encoder.encoder_id, "lineage": read_lineage(weights)},
            "split": split, "sequences": rows, "summary": summarise(rows, pooled)}


def summarise(rows: list[dict[str, Any]], pooled: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Summary block: counts, pooled aligned MPVE (and its identity / expression parts) over the GT (frame, view)
    samples (``pooled`` maps each :data:`POOLED` key to per-sequence sample arrays), NME / NME-GT over sequences."""
    ok = [r for r in rows if r["status"] == "ok"]
    gt_rows = [r for r in ok if r["has_gt"]]
    return {
        "n_sequences": len(ok), "n_frames": int(sum(r["n_frames"] for r in ok)), "n_gt_sequences": len(gt_rows),
        "n_failed": len(rows) - len(ok),
        **{f"{k}_mm": _stats(np.concatenate(v)) if v else None for k, v in pooled.items()},
        "nme": _stats([r["nme"] for r in ok if r["nme"] is not None], median=False),
        "nme_gt": _stats([r["nme_gt"] for r in gt_rows if r["nme_gt"] is not None], median=False),
    }
