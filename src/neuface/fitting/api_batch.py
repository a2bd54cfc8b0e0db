"""``run_fits``: one annotator on K sequences in one process, NeuFace's clips fitted as one batch.

What each clip gets is what :func:`~neuface.fitting.api.run_fit` gives it — the same fit file, failure records
and carried warnings — but the NeuFace optimisation of the clips runs as one batched computation
(:func:`~neuface.fitting.batched.fit_neuface_batch`) with one checkpoint for the batch. Clips that cannot join
the batch are fitted on their own, in order: a failed upstream stage (written as a failed fit at once), a clip of
several shots (fitted shot by shot), and every clip of an annotator whose method is not ``neuface``.

The batch checkpoint lives next to the first clip's checkpoint, named after the batch's clips
(``batch-<sha1 of the sequence ids>.pt``), and is keyed by the settings and every clip's input digests; a rerun
of the same batch (a requeued shard) resumes it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from neuface.fitting import api
from neuface.fitting.checkpoint import Checkpointer, StopSignal
from neuface.fitting.config import AnnotatorSettings, config_hash
from neuface.fitting.data import load_sequence, upstream_status
from neuface.fitting.forward import FitFailure, deterministic_mode, resolve_device
from neuface.process_cache import cached_flame_layer
from neuface.status import StageStatus

log = logging.getLogger(__name__)

__all__ = ["FitJob", "batch_checkpoint_path", "run_fits"]


@dataclass(frozen=True)
class FitJob:
    """One sequence's files: its crops and landmarks, the fit file to write, its (single-fit) checkpoint."""

    crops: str
    landmarks: str
    out: str
    checkpoint: str | None = None


def batch_checkpoint_path(jobs: list[FitJob], sequences: list[str]) -> Path | None:
    """``batch-<sha1 of the sequence ids>.pt`` next to the first job's checkpoint (None without checkpoints)."""
    if not jobs or jobs[0].checkpoint is None:
        return None
    digest = hashlib.sha1("\n".join(sequences).encode(), usedforsecurity=False).hexdigest()[:16]
    return Path(jobs[0].checkpoint).with_name(f"batch-{digest}.pt")


def run_fits(jobs: list[FitJob], flame_path, embedding_path, annotator: str, settings: AnnotatorSettings,
             encoder=None, stop: StopSignal | None = None) -> list[StageStatus]:
    """Fit every job; returns their statuses in order (each job's fit file is always written).

    Raises:
        Preempted: SIGTERM was received; the batch checkpoint was written (the caller exits 143).
    """
    api.check_assets(flame_path, embedding_path)
    if settings.method != "neuface" or len(jobs) < 2:
        return [api.run_fit(j.crops, j.landmarks, flame_path, embedding_path, annotator, settings, j.out,
                            checkpoint=j.checkpoint, encoder=encoder, stop=stop) for j in jobs]
    chash = config_hash(settings)
    statuses: list[StageStatus | None] = [None] * len(jobs)
    batch = []  # (index, job, sequence, meta, upstream)
    for i, job in enumerate(jobs):
        upstream = upstream_status(job.crops, job.landmarks)
        meta = api.new_meta(annotator, settings, flame_path)
        if not upstream.ok:
            statuses[i] = api.write_upstream_failure(job.out, upstream, meta)
            continue
        seq = load_sequence(job.crops, job.landmarks)
        if seq.n_shots > 1:  # one identity per shot: fitted shot by shot on its own
            statuses[i] = api.run_fit(job.crops, job.landmarks, flame_path, embedding_path, annotator, settings,
                                      job.out, checkpoint=job.checkpoint, encoder=encoder, stop=stop)
            continue
        api.describe_sequence(meta, seq)
        batch.append((i, job, seq, meta, upstream))
    if batch:
        for i, status in zip([b[0] for b in batch], _fit_batch(batch, flame_path, embedding_path, annotator,
                                                                settings, chash, encoder, stop), strict=True):
            statuses[i] = status
    return statuses


def _fit_batch(batch, flame_path, embedding_path, annotator: str, settings: AnnotatorSettings, chash: str, encoder,
               stop: StopSignal | None) -> list[StageStatus]:
    from neuface.fitting.batched import fit_neuface_batch

    device = resolve_device(settings.device)
    jobs, seqs = [b[1] for b in batch], [b[2] for b in batch]
    names = [s.sequence for s in seqs]
    flame = cached_flame_layer(flame_path, embedding_path, n_shape=100, n_exp=50, device=device)

    def inputs() -> dict[str, str]:
        digests = {}
        for job, name in zip(jobs, names, strict=True):
            one = api._input_sha256s(job.crops, job.landmarks, flame_path, embedding_path, settings.encoder_weights)
            digests.update({f"{name}:{k}": v for k, v in one.items()})
        return digests

    ckpt = Checkpointer(batch_checkpoint_path(jobs, names), settings.checkpoint_every, chash, "neuface-batch", stop,
                        inputs=inputs)
    t0 = time.perf_counter()
    with deterministic_mode(settings.deterministic, settings.seed):
        if encoder is None:
            encoder = api._fresh_encoder(settings.encoder, settings.encoder_weights, device)
        log.info("fitting %d clips as one batch on %s: %s", len(seqs), device, ", ".join(names))
        outcomes = fit_neuface_batch(encoder, flame, seqs, settings, device, ckpt)
    seconds = time.perf_counter() - t0
    statuses = []
    for (_, job, seq, meta, upstream), outcome in zip(batch, outcomes, strict=True):
        meta.device = str(device)
        meta.encoder_id = str(getattr(encoder, "encoder_id", "unknown"))
        share = seconds / len(seqs)  # the batch's wall time, shared evenly
        if isinstance(outcome, FitFailure):
            statuses.append(api.write_failed_fit(job.out, seq, annotator, outcome, meta, upstream, share, device))
            continue
        outcome.details.update(clips_in_batch=len(seqs), batch_wall_time_s=seconds)
        statuses.append(api.write_outcome(job.out, seq, annotator, outcome, None, meta, upstream, flame, share,
                                          device))
    ckpt.done()
    return statuses
