"""Writing a fine-tuned encoder in the format its kind's loader reads, plus its lineage record.

* ``builtin``: :func:`~neuface.encoders.builtin.save_builtin`; the file's ``config.training`` holds
  ``{"finetune": <lineage>, "pretrain": <the base file's training record>}``.
* ``deca``: DECA's ``deca_model.tar`` layout: the base file's entries (``E_detail``, ``D_detail``, ...) with
  ``E_flame`` replaced; training-snapshot entries (``opt``, ``global_step``, ``batch_size``) are dropped and
  ``neuface_training`` (the lineage, plain JSON types) is added. DECA's own loader ignores the extra key.
* ``emoca``: the Lightning layout ``{"state_dict": {...}}`` with ``<prefix>E_flame.*`` and
  ``<prefix>E_expression.*`` replaced (the base's prefix, ``deca.`` for EMOCA's release) and every other state
  entry kept; ``epoch``, ``global_step``, ``pytorch-lightning_version`` are kept when present, optimizer and
  callback states are dropped, ``neuface_training`` is added.

The lineage record is also written as JSON next to the weights (:func:`lineage_path`: ``<out>.json``), with the
output's own sha256 and ``encoder_id`` (which cannot be inside the file they describe).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from neuface.encoders.base import FlameEncoder
from neuface.encoders.builtin import read_builtin_config, save_builtin
from neuface.encoders.checkpoint import cpu_state_dict, safe_torch_load
from neuface.errors import ModelFormatError, NeufaceError
from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

__all__ = ["lineage_path", "read_lineage", "save_finetuned", "write_lineage"]

_DECA_DROPPED = ("opt", "global_step", "batch_size", "neuface_training")
_LIGHTNING_KEPT = ("epoch", "global_step", "pytorch-lightning_version")


def lineage_path(out: str | os.PathLike) -> Path:
    """The lineage record of weights ``out``: ``<out>.json`` (e.g. ``ft.pt`` → ``ft.pt.json``)."""
    return Path(f"{os.fspath(out)}.json")


def read_lineage(weights: str | os.PathLike | None) -> dict[str, Any] | None:
    """The lineage record next to ``weights``, or None when there is none (or it is unreadable: a warning)."""
    if weights is None:
        return None
    path = lineage_path(weights)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable lineage record %s: %s", path, exc)
        return None


def write_lineage(out: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``<out>.json`` (atomic, strict JSON)."""
    path = lineage_path(out)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` through JSON (plain types only, so the file stays loadable with ``weights_only=True``)."""
    try:
        return json.loads(json.dumps(record, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise NeufaceError(f"lineage record is not JSON-serialisable: {exc}") from None


def save_finetuned(encoder: FlameEncoder, kind: str, base_weights: str | os.PathLike, out: str | os.PathLike,
                   lineage: Mapping[str, Any]) -> Path:
    """Write ``encoder`` to ``out`` (atomically) in the format of ``kind`` (module docstring)."""
    lineage = _plain(lineage)
    if kind == "builtin":
        base_training = read_builtin_config(base_weights).get("training", {})
        return save_builtin(encoder, out, training={"finetune": lineage, "pretrain": base_training})
    if kind == "deca":
        base = safe_torch_load(base_weights)
        if not isinstance(base, Mapping):
            raise ModelFormatError(f"{base_weights}: not a DECA checkpoint")
        data = {k: v for k, v in base.items() if k not in _DECA_DROPPED}
        data["E_flame"] = cpu_state_dict(encoder.E_flame)
    elif kind == "emoca":
        data = _emoca_payload(encoder, base_weights)
    else:
        raise NeufaceError(f"unknown encoder kind {kind!r}")
    data["neuface_training"] = lineage
    with atomic_path(out, suffix=".tmp") as tmp:
        torch.save(data, tmp)
    return Path(out)


def _emoca_payload(encoder: FlameEncoder, base_weights: str | os.PathLike) -> dict[str, Any]:
    base = safe_torch_load(base_weights, allow_lightning_callbacks=True)
    wrapped = isinstance(base, Mapping) and isinstance(base.get("state_dict"), Mapping)
    state = base["state_dict"] if wrapped else base
    if not isinstance(state, Mapping):
        raise ModelFormatError(f"{base_weights}: not an EMOCA checkpoint")
    prefix = "deca." if any(str(k).startswith("deca.E_expression.") for k in state) else ""
    modules = {f"{prefix}E_flame.": encoder.E_flame, f"{prefix}E_expression.": encoder.E_expression}
    new_state = {k: v for k, v in state.items() if not str(k).startswith(tuple(modules))}
    for pre, module in modules.items():
        new_state.update({pre + k: v for k, v in cpu_state_dict(module).items()})
    data: dict[str, Any] = {"state_dict": new_state}
    if wrapped:
        data.update({k: base[k] for k in _LIGHTNING_KEPT if k in base and isinstance(base[k], (int, float, str))})
    return data
