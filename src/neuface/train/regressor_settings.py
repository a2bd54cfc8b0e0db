"""Settings of ``neuface train regressor`` (:func:`neuface.train.regressor.finetune_regressor`).

A torch-free module, so that building the ``neuface`` command line (which shows these defaults) imports no torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace

from neuface.errors import NeufaceError

#: Learning rate per encoder kind when ``lr`` is not given: the paper's 1e-5 for DECA's ResNet-50 (ten times
#: below DECA's training rate, appendix "Fine-tuning face mesh regressor"); EMOCA shares DECA's backbone. The
#: small builtin encoder (pre-trained at 2e-3) needs a larger step to move in a few hundred steps: 1e-4,
#: measured on the synthetic benchmark (docs/training.md).
DEFAULT_LR = {"deca": 1e-5, "emoca": 1e-5, "builtin": 1e-4}

#: Settings that change how, not what, is computed: left out of the checkpoint fingerprint.
RUNTIME_ONLY = ("device", "workers", "checkpoint_every", "progress")
#: Identity in the 3D terms: ``label`` (the paper's: targets FLAME(β, ψ, r, θ) of the annotation) or
#: ``predicted`` (both meshes built with the encoder's own β, detached: the 3D terms supervise expression, jaw and
#: head pose only, identity is learnt from the 2D term alone).
IDENTITY_3D = ("label", "predicted")
#: Frame of the 3D terms: ``posed`` (the paper's: the posed mesh, global rotation r applied on both sides, so they
#: also supervise head pose) or ``canonical`` (r set to 0 on both sides: they compare shape, expression, jaw and
#: neck only, and head pose is left to the 2D term, which determines it; docs/training.md).
POSE_3D = ("posed", "canonical")
#: A fine-tuned model trained with a further seed (``train.regressor.repeats``) is named ``<model>_seed<S>``.
_SEED_SUFFIX = re.compile(r"(.+?)_seed(\d+)")


def seed_suffix(seed: int | None) -> str:
    """``_seed<S>`` for a repeat's model name; "" for ``None`` (the configured seed keeps the plain name)."""
    return "" if seed is None else f"_seed{int(seed)}"


def split_seed_suffix(name: str) -> tuple[str, int | None]:
    """``neuface_3d_seed2`` → (``neuface_3d``, 2); a name without the suffix → (name, None)."""
    match = _SEED_SUFFIX.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else (name, None)


@dataclass
class RegressorSettings:
    """Fine-tuning settings; every field is recorded in the lineage record of the output.

    Loss: ``λ_2D·L_lmk2D + λ_M3D·L_M3D + λ_J3D·L_J3D`` (``use_3d=False`` drops both 3D terms: the paper's
    DECA_NeuFace,2D). L_lmk2D is NeuFace's masked L1 in crop NDC; the 3D terms are mean squared distances in mm²
    (posed FLAME mesh and 68 3D landmarks, :mod:`neuface.train.losses3d`); ``identity_3d`` (:data:`IDENTITY_3D`)
    says whether they also supervise β, ``pose_3d`` (:data:`POSE_3D`) whether they also supervise the global head
    rotation. With the defaults a 1-px landmark error
    in a 224 crop (≈ 0.009 NDC) weighs like a ~1 mm vertex error.
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float | None = None  # None: DEFAULT_LR of the encoder kind
    lambda_l2d: float = 1.0
    lambda_m3d: float = 0.01
    lambda_j3d: float = 0.01
    use_3d: bool = True
    identity_3d: str = "label"  # IDENTITY_3D
    pose_3d: str = "posed"  # POSE_3D
    #: BatchNorm kept in eval mode (running statistics of the pre-trained encoder; affine weights still trained),
    #: as NeuFace fits the encoder: batches of a few correlated frames must not replace the statistics.
    freeze_batchnorm: bool = True
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # max global gradient norm (0: no clipping)
    seed: int = 0
    deterministic: bool = True
    amp: bool = False  # bf16 autocast of the encoder (FLAME and losses stay float32)
    skip_missing: bool = False  # sequences without a crops file: error (False) or skipped with a warning
    val_every: int = 100  # steps between validation passes (0: only at the end); needs a validation dataset
    val_max_items: int = 512  # validation frames used (the first ones, in a fixed order; 0: all)
    device: str = "auto"
    workers: int = 0  # DataLoader worker processes
    checkpoint_every: int = 100
    progress: bool = True

    def resolved(self, kind: str) -> RegressorSettings:
        """A copy with ``lr`` filled from :data:`DEFAULT_LR` for encoder ``kind`` and every value checked."""
        if kind not in DEFAULT_LR:
            raise NeufaceError(f"unknown encoder kind {kind!r}; choose one of {', '.join(DEFAULT_LR)}")
        out = replace(self, lr=DEFAULT_LR[kind] if self.lr is None else float(self.lr))
        out.check()
        return out

    def check(self) -> None:
        problems = []
        for name in ("steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("val_every", "val_max_items", "workers", "checkpoint_every"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} must be >= 0")
        for name in ("lambda_l2d", "lambda_m3d", "lambda_j3d", "weight_decay", "grad_clip"):
            value = float(getattr(self, name))
            if not value >= 0 or value == float("inf"):
                problems.append(f"{name} must be a finite number >= 0, got {value}")
        if self.identity_3d not in IDENTITY_3D:
            problems.append(f"identity_3d must be one of {', '.join(IDENTITY_3D)}, got {self.identity_3d!r}")
        if self.pose_3d not in POSE_3D:
            problems.append(f"pose_3d must be one of {', '.join(POSE_3D)}, got {self.pose_3d!r}")
        if self.lr is not None and not 0 < float(self.lr) < float("inf"):
            problems.append(f"lr must be > 0, got {self.lr}")
        if problems:
            raise NeufaceError("invalid regressor fine-tuning settings: " + "; ".join(problems))

    def record(self) -> dict:
        """JSON-able dict of every field."""
        return json.loads(json.dumps(asdict(self)))

    def fingerprint_record(self) -> dict:
        """The fields that change the result (checkpoint key)."""
        return {k: v for k, v in self.record().items() if k not in RUNTIME_ONLY}
