"""One identity per shot: fit each shot of a cut sequence on its own and join the results (:func:`fit_by_shot`).

A sequence with several shots (:mod:`neuface.shots`; found by the landmarks stage) is fitted shot by shot with
the unchanged per-sequence annotators: every shot gets a fresh copy of the pristine encoder, the RNGs seeded as
for a fit of its own, and — with checkpointing — its own checkpoint file ``<checkpoint stem>.shot<k><suffix>``
(kept until every shot is done, so a preempted fit resumes in the shot it was in). The result is therefore the
concatenation of the fits of the shots alone: the per-frame parameters in frame order, one β per shot
(``shape_shots`` (S, n_shape)), and as the sequence's ``shape`` the β of the longest shot (the first of equal
length). Loss curves are concatenated shot after shot. Nothing (temporal target, multi-view mean, identity)
crosses a cut.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuface.fitting.checkpoint import Checkpointer
from neuface.fitting.config import AnnotatorSettings
from neuface.fitting.data import SequenceBatch
from neuface.fitting.forward import FitFailure, FitParams, deterministic_mode, predict_landmarks_px
from neuface.fitting.neuface import FitOutcome
from neuface.shots import check_shots

log = logging.getLogger(__name__)

__all__ = ["ShotFit", "fit_by_shot", "join_outcomes", "shot_checkpoint_path"]


@dataclass
class ShotFit:
    """A fit of several shots: the joined ``outcome``, ``shape_shots`` (S, n_shape), ``landmarks_pred``
    (F, V, 68, 2) and ``details`` (one JSON-able dict per shot)."""

    outcome: FitOutcome
    shape_shots: np.ndarray
    landmarks_pred: np.ndarray
    details: list[dict[str, Any]]


def shot_checkpoint_path(checkpoint: str | os.PathLike | None, k: int) -> Path | None:
    """``results/checkpoints/a/seq.pt`` → ``results/checkpoints/a/seq.shot<k>.pt`` (None stays None)."""
    if checkpoint is None:
        return None
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.shot{k}{p.suffix}")


def join_outcomes(outcomes: list[FitOutcome], bounds: np.ndarray) -> tuple[FitOutcome, np.ndarray]:
    """Join per-shot outcomes (in frame order) into one: per-frame arrays concatenated, loss curves appended,
    ``shape`` = the longest shot's β. Returns ``(outcome, shape_shots (S, n_shape))``."""
    bounds = check_shots(bounds, int(np.asarray(bounds)[-1, 1]))
    if len(outcomes) != len(bounds):
        raise FitFailure(f"{len(outcomes)} shot fits for {len(bounds)} shots")
    longest = int(np.argmax(bounds[:, 1] - bounds[:, 0]))
    shape_shots = np.stack([np.asarray(o.params.shape, dtype=np.float32) for o in outcomes])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(o.params, name) for o in outcomes], axis=0)

    params = FitParams(shape=shape_shots[longest].copy(), expression=cat("expression"),
                       global_pose=cat("global_pose"), pose=cat("pose"), cam=cat("cam"))
    names = list(dict.fromkeys(k for o in outcomes for k in o.losses))
    losses = {k: [float(v) for o in outcomes for v in o.losses.get(k, [])] for k in names}
    details = dict(outcomes[longest].details)
    return FitOutcome(params, losses, sum(o.n_steps for o in outcomes), details), shape_shots


def fit_by_shot(encoder, flame, seq: SequenceBatch, settings: AnnotatorSettings, device,
                checkpoint: str | os.PathLike | None, make_checkpointer: Callable[[Path | None], Checkpointer],
                dispatch: Callable[..., FitOutcome]) -> ShotFit:
    """Fit every shot of ``seq`` (``seq.shots`` (S, 2)) with ``dispatch(encoder, flame, shot_seq, settings,
    device, checkpointer)`` and join the results.

    Args:
        encoder: the pristine encoder; each shot fits a deep copy of it.
        make_checkpointer: checkpoint path (or None) → a :class:`Checkpointer` for one shot.
    Raises:
        FitFailure: a shot's fit failed (the message names the shot); every shot checkpoint is removed.
        Preempted: SIGTERM; the current shot's checkpoint was written, the finished shots' are kept.
    """
    if seq.shots is None:
        raise FitFailure("fit_by_shot needs a sequence with shots")
    bounds = check_shots(seq.shots, seq.n_frames)
    ckpts = [make_checkpointer(shot_checkpoint_path(checkpoint, k)) for k in range(len(bounds))]
    outcomes: list[FitOutcome] = []
    preds, details = [], []
    for k, (start, stop) in enumerate(bounds):
        part = seq.frames(int(start), int(stop))
        reason = seq.shot_reasons[k] if k < len(seq.shot_reasons) else "?"
        log.info("%s: shot %d/%d, frames %d-%d (%s)", seq.sequence, k + 1, len(bounds), start, stop, reason)
        try:
            with deterministic_mode(settings.deterministic, settings.seed):  # as if the shot were fitted alone
                outcome = dispatch(copy.deepcopy(encoder), flame, part, settings, device, ckpts[k])
        except FitFailure as exc:
            for c in ckpts:
                c.done()
            raise FitFailure(f"shot {k} (frames {start}-{stop}): {exc}") from None
        outcomes.append(outcome)
        preds.append(predict_landmarks_px(flame, outcome.params, part.transforms, part.crop_size))
        final = outcome.losses.get("total") or [None]
        details.append({"start": int(start), "stop": int(stop), "reason": reason,
                        "identity": int(seq.shot_identity[k]) if seq.shot_identity is not None else -1,
                        "n_steps": outcome.n_steps, "beta_norm": float(np.linalg.norm(outcome.params.shape)),
                        "final_loss": final[-1], **outcome.details})
    joined, shape_shots = join_outcomes(outcomes, bounds)
    for c in ckpts:
        c.done()
    return ShotFit(joined, shape_shots, np.concatenate(preds, axis=0), details)
