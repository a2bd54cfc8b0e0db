"""Settings of the builtin encoder's pre-training (:mod:`neuface.encoders.pretrain`).

A torch-free module, so that building the ``neuface`` command line (which shows these defaults) imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PretrainSettings:
    """Training settings (recorded in the saved file). The defaults (29 min on a busy 2-core CPU, measured)
    make a credible per-frame regressor; the package ships their result for the default synthetic kit
    (:mod:`neuface.encoders.shipped`), so the workflow copies it instead of training when the model matches."""

    steps: int = 3000
    batch_size: int = 32
    pool_size: int = 2048
    channels_last: bool = True
    lr: float = 2e-3
    seed: int = 0
    # Identities stay inside the dataset filter's ||beta||_2 <= 1 (paper appendix): E||beta|| ~ 0.06 * sqrt(100).
    shape_std: float = 0.06
    # Expression k has std exp_std / (1 + exp_decay * k): leading components move most, as in real faces.
    exp_std: float = 1.0
    exp_decay: float = 0.2
    yaw_deg: float = 90.0
    pitch_deg: float = 30.0
    roll_deg: float = 15.0
    # Jaw opening: closed (|N(0, 0.03)| rad) with probability jaw_closed_prob, else uniform in [0, jaw_max].
    jaw_max: float = 0.35
    jaw_closed_prob: float = 0.5
    scale_jitter: float = 0.1
    shift_jitter: float = 0.06
    w_landmarks: float = 10.0
    w_params: float = 1.0
    # Weight of the β/ψ prior ||β||² + ||ψ||² per image (DECA's shape/expression regularisers). A base trained
    # from 2D landmarks alone needs it: 68 points do not determine 100 β, and without a prior β drifts far
    # outside the FLAME prior (‖β‖ ~ 30 measured). 0 for the shipped, 3D-supervised encoder.
    w_prior: float = 0.0
    image_size: int = 224
