"""Training on packed NeuFace datasets (paper §5): regressor fine-tuning with 3D supervision and its evaluation.

Modules are imported lazily (``neuface.train.finetune_regressor`` imports torch only when first used):
:mod:`~neuface.train.losses3d` (L_M3D, L_J3D), :mod:`~neuface.train.regressor_data` (frames of packed splits
with their crops), :mod:`~neuface.train.regressor` (``finetune_regressor``), :mod:`~neuface.train.regressor_eval`
(per-frame ``regress`` evaluation against ground truth).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RegressorSettings": "neuface.train.regressor_settings",
    "mesh_loss": "neuface.train.losses3d",
    "landmark3d_loss": "neuface.train.losses3d",
    "RegressorFrames": "neuface.train.regressor_data",
    "finetune_regressor": "neuface.train.regressor",
    "evaluate_regressor": "neuface.train.regressor_eval",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neuface.train' has no attribute {name!r}")
