"""Safe checkpoint reading and strict state-dict matching shared by the encoder loaders."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuface.errors import AssetMissingError, ModelFormatError, UnsafePickleError

#: BatchNorm buffers that may be absent from old checkpoints (saved before torch 0.4.1); filled with 0.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: str | os.PathLike | None, what: str, hint: str) -> Path:
    """``Path(path)`` if it is an existing file, else :class:`AssetMissingError` with ``hint``."""
    if path is None:
        raise AssetMissingError(f"no {what} given; {hint}")
    p = Path(path)
    if not p.is_file():
        raise AssetMissingError(f"{what} not found: {p}; {hint}")
    return p


class _LightningStub:
    """Stand-in for Lightning callback classes that old Lightning checkpoints use as dict keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


#: Lightning (< 1.5) keyed ``checkpoint['callbacks']`` by the callback *class*; mapped to an inert stub.
_LIGHTNING_CALLBACKS = [
    f"{pkg}.callbacks.{mod}.{cls}"
    for pkg in ("pytorch_lightning", "lightning.pytorch")
    for mod, cls in (("model_checkpoint", "ModelCheckpoint"), ("early_stopping", "EarlyStopping"))
]


def safe_torch_load(path: str | os.PathLike, allow_lightning_callbacks: bool = False) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)``: tensors, containers and numbers only.

    Raises:
        UnsafePickleError: the file asks for any other class or function (nothing from it runs).
        ModelFormatError: not a torch checkpoint at all.
    """
    ctx = contextlib.nullcontext()
    if allow_lightning_callbacks:
        ctx = torch.serialization.safe_globals([(_LightningStub, name) for name in _LIGHTNING_CALLBACKS])
    try:
        with ctx:
            return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise UnsafePickleError(
            f"{path}: refused to unpickle (weights_only=True allows tensors, containers and numbers only): "
            f"{detail.strip()}"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelFormatError(f"{path}: not a readable torch checkpoint ({exc})") from None


def _fmt_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def strict_state_dict(module: nn.Module, state: Any, source: str) -> dict[str, torch.Tensor]:
    """Check ``state`` against ``module.state_dict()`` key by key; return it completed and cast.

    Every key of the module must be present with the same shape, and no other key may exist, except that
    BatchNorm ``num_batches_tracked`` may be missing (filled with 0; it does not affect eval-mode outputs).

    Raises:
        ModelFormatError: naming the missing, unexpected, non-tensor or mis-shaped key(s).
    """
    if not isinstance(state, Mapping):
        raise ModelFormatError(f"{source}: expected a state dict (mapping), got {type(state).__name__}")
    expected = module.state_dict()
    bad_type = sorted(str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad_type:
        raise ModelFormatError(f"{source}: non-tensor entries: {_fmt_keys(bad_type)}")
    missing = sorted(k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIXES))
    unexpected = sorted(k for k in state if k not in expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"mis-shaped tensors: {_fmt_keys(shapes)}")
    if problems:
        raise ModelFormatError(f"{source}: " + "; ".join(problems))
    out = {}
    for k, ref in expected.items():
        value = state.get(k)
        if value is None:
            value = torch.zeros_like(ref)
        elif ref.is_floating_point() != value.is_floating_point():
            raise ModelFormatError(f"{source}: {k} has dtype {value.dtype}, expected {ref.dtype}")
        out[k] = value.to(ref.dtype)
    return out


def load_strict(module: nn.Module, state: Any, source: str) -> nn.Module:
    """:func:`strict_state_dict` then ``module.load_state_dict(..., strict=True)``."""
    module.load_state_dict(strict_state_dict(module, state, source), strict=True)
    return module


def sub_state_dict(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Entries of ``state`` under ``prefix`` (prefix removed)."""
    return {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A plain ``{key: contiguous CPU tensor}`` copy (no ``_metadata``), suitable for torch.save."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
