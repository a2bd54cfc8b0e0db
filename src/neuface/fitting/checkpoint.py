"""Preemption-safe optimisation: periodic atomic checkpoints, resume, and SIGTERM → checkpoint + exit 143.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values (loaded back with
``weights_only=True``): model/parameter state, optimiser state, loop counters, E-step targets, loss history,
RNG states, the annotator's ``config_hash`` and the sha256 of every input file of the fit (``inputs``: crops,
landmarks, FLAME model, landmark embedding, encoder weights). A checkpoint written with other settings or for
other input contents is ignored with a warning naming what changed (the run starts fresh): resuming it would
mix two fits. With deterministic settings a resumed run reproduces an uninterrupted one exactly, because
everything the remaining steps depend on is in the checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

__all__ = ["Checkpointer", "Preempted", "StopSignal", "load_checkpoint", "save_checkpoint",
           "rng_state", "set_rng_state", "PREEMPTED_EXIT_CODE"]

#: Exit code after a SIGTERM (128 + 15), so SLURM requeues and a rerun resumes.
PREEMPTED_EXIT_CODE = 143


class Preempted(Exception):
    """Raised after a checkpoint was written in response to SIGTERM."""


class StopSignal:
    """Context manager: SIGTERM sets :attr:`requested` instead of killing the process (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._prev: Any = None

    def _handler(self, signum, frame) -> None:  # pragma: no cover - exercised in a subprocess
        log.warning("received signal %d: checkpointing and stopping", signum)
        self.requested = True

    def __enter__(self) -> StopSignal:
        try:
            self._prev = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self._prev = None
        return self

    def __exit__(self, *exc) -> None:
        if self._prev is not None:
            signal.signal(signal.SIGTERM, self._prev)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temporary file, then rename)."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike | None, config_hash: str, kind: str,
                    inputs: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists and matches ``config_hash``, ``kind`` and (unless None) the
    ``inputs`` digests (name -> sha256 of each input file); else None, with a warning naming what changed."""
    if path is None or not Path(path).is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt checkpoint must not stop the run
        log.warning("ignoring unreadable checkpoint %s (%s); starting fresh", path, exc)
        return None
    changed = []
    if payload.get("config_hash") != config_hash or payload.get("kind") != kind:
        changed.append(f"settings changed (written with other settings: {payload.get('kind')}/"
                       f"{str(payload.get('config_hash'))[:12]}, now {kind}/{config_hash[:12]})")
    if inputs is not None:
        saved = payload.get("inputs")
        if not isinstance(saved, dict):
            changed.append("inputs changed? (the checkpoint records no input digests)")
        else:
            names = sorted(n for n in set(saved) | set(inputs) if saved.get(n) != inputs.get(n))
            if names:
                changed.append(f"inputs changed: {', '.join(names)}")
    if changed:
        log.warning("discarding checkpoint %s: %s; starting fresh", path, "; ".join(changed))
        return None
    log.info("resuming from checkpoint %s (step %d)", path, payload.get("step", -1))
    return payload


class Checkpointer:
    """Saves every ``every`` steps and when a stop was requested (then raises :class:`Preempted`).

    Args:
        path: checkpoint file, or None to disable saving (a stop request still raises).
        every: period in optimisation steps.
        config_hash: written into every checkpoint.
        kind: annotator method (a checkpoint of another method is never resumed).
        stop: the :class:`StopSignal` to poll.
        inputs: name -> sha256 of each input file of the fit, or a function returning them (called once, when
            a checkpoint is first loaded or saved, so a fit that never checkpoints hashes nothing); written into
            every checkpoint, and a checkpoint of other inputs is never resumed. None: not checked.
    """

    def __init__(self, path: str | os.PathLike | None, every: int, config_hash: str, kind: str,
                 stop: StopSignal | None = None,
                 inputs: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.every = max(1, int(every))
        self.config_hash = config_hash
        self.kind = kind
        self.stop = stop
        self._inputs = inputs

    @property
    def inputs(self) -> dict[str, str] | None:
        """The input digests (computed on first use when given as a function)."""
        if callable(self._inputs):
            self._inputs = self._inputs()
        return None if self._inputs is None else dict(self._inputs)

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        return load_checkpoint(self.path, self.config_hash, self.kind, self.inputs)

    def after_step(self, step: int, make_payload: Callable[[], dict[str, Any]]) -> None:
        """Call after optimisation step ``step`` (1-based count of steps done)."""
        stopping = self.stop is not None and self.stop.requested
        if self.path is not None and (stopping or step % self.every == 0):
            payload = make_payload()
            payload.update({"config_hash": self.config_hash, "kind": self.kind, "step": step,
                            "rng": rng_state()})
            if self.inputs is not None:
                payload["inputs"] = self.inputs
            save_checkpoint(self.path, payload)
            log.debug("checkpoint written at step %d", step)
        if stopping:
            raise Preempted(f"stopped by SIGTERM after step {step}")

    def done(self) -> None:
        """Delete the checkpoint after a successful fit."""
        if self.path is not None and self.path.exists():
            self.path.unlink()
