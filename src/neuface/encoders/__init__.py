"""FLAME encoders: DECA's ``E_flame``, EMOCA, and a small ``builtin`` CNN; :func:`load_encoder` picks one.

All map (B, 3, 224, 224) RGB crops in [0, 1] to :class:`EncoderOutput` (float32, also under
``torch.autocast``), support ``.to_channels_last()`` and ``.freeze_batchnorm()``.
"""

from __future__ import annotations

import os

import torch

from neuface.encoders.base import (
    DECA_LAYOUT,
    DECA_PARAM_DIM,
    EncoderOutput,
    FlameEncoder,
    decode_deca_params,
    freeze_batchnorm,
)
from neuface.encoders.builtin import BuiltinEncoder, load_builtin, save_builtin
from neuface.encoders.deca import (
    DecaEncoder,
    EmocaEncoder,
    load_deca,
    load_emoca,
    write_deca_checkpoint,
    write_emoca_checkpoint,
)
from neuface.errors import NeufaceError

ENCODER_KINDS = ("deca", "emoca", "builtin")


def load_encoder(kind: str, weights: str | os.PathLike | None, device: str | torch.device = "cpu") -> FlameEncoder:
    """Load an encoder of ``kind`` (``deca``, ``emoca`` or ``builtin``) from ``weights``, in eval mode.

    Raises:
        NeufaceError: unknown kind.  AssetMissingError: ``weights`` missing (says where to get them).
        ModelFormatError / UnsafePickleError: the file is not in the expected format.
    """
    loaders = {"deca": load_deca, "emoca": load_emoca, "builtin": load_builtin}
    if kind not in loaders:
        raise NeufaceError(f"unknown encoder kind {kind!r}; choose one of {', '.join(ENCODER_KINDS)}")
    return loaders[kind](weights, device)


__all__ = [
    "DECA_LAYOUT",
    "DECA_PARAM_DIM",
    "ENCODER_KINDS",
    "BuiltinEncoder",
    "DecaEncoder",
    "EmocaEncoder",
    "EncoderOutput",
    "FlameEncoder",
    "decode_deca_params",
    "freeze_batchnorm",
    "load_builtin",
    "load_deca",
    "load_emoca",
    "load_encoder",
    "save_builtin",
    "write_deca_checkpoint",
    "write_emoca_checkpoint",
]
