"""``builtin``: a small ResNet-18-like FLAME regressor that can be pre-trained offline on rendered faces.

(B, 3, 224, 224) crops are average-pooled to ``internal_size`` inside the network, passed through a
reduced-width BasicBlock ResNet (BatchNorm) and an MLP head predicting β (100), ψ (50), global pose (3), jaw
pose (3) and the crop camera (3). Outputs are scaled so that an untrained network (zero-ish last layer)
predicts the mean face, frontal, centred, at the prior camera scale ``cam_prior``.

File format (``torch.save``, loaded with ``weights_only=True``)::

    {"format": "neuface.encoder", "format_version": 1, "kind": "builtin",
     "config": {"arch": {...}, "training": {...}}, "state_dict": {...}}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neuface.encoders.base import EncoderOutput, FlameEncoder
from neuface.encoders.checkpoint import cpu_state_dict, file_sha256, load_strict, require_file, safe_torch_load
from neuface.encoders.resnet import BasicBlock, ResNet, deterministic_init
from neuface.errors import ModelFormatError
from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

FORMAT = "neuface.encoder"
FORMAT_VERSION = 1
BUILTIN_HINT = "create it with `neuface encoder pretrain --flame MODEL --embedding EMB --out PATH`"

#: Default architecture; every key is stored in the file's config.
DEFAULT_ARCH: dict[str, Any] = {
    "width": 16,  # channels of the first stage (ResNet-18: 64)
    "blocks": [2, 2, 2, 2],
    "internal_size": 112,  # crops are average-pooled from 224 to this
    "hidden": 256,
    "n_shape": 100,
    "n_exp": 50,
    "cam_prior": [8.0, 0.0, 0.0],  # (s, tx, ty) predicted by an untrained network
    "global_pose_scale": 0.5,  # radians per unit of raw output
    "jaw_pose_scale": 0.1,
    "cam_log_scale": 0.2,  # s = s0 * exp(cam_log_scale * raw)
    "cam_t_scale": 0.05,  # t = t0 + cam_t_scale * raw
}


class BuiltinEncoder(FlameEncoder):
    """Small CNN encoder; ``arch`` overrides keys of :data:`DEFAULT_ARCH`."""

    def __init__(self, arch: Mapping[str, Any] | None = None, encoder_id: str = "builtin:untrained"):
        super().__init__()
        unknown = set(arch or {}) - set(DEFAULT_ARCH)
        if unknown:
            raise ModelFormatError(f"unknown builtin encoder settings: {sorted(unknown)}")
        self.arch = {**DEFAULT_ARCH, **(arch or {})}
        a = self.arch
        if self.input_size % int(a["internal_size"]) != 0:
            raise ModelFormatError(f"internal_size must divide {self.input_size}, got {a['internal_size']}")
        w = int(a["width"])
        self.n_shape, self.n_exp = int(a["n_shape"]), int(a["n_exp"])
        self.backbone = ResNet(BasicBlock, tuple(a["blocks"]), widths=(w, 2 * w, 4 * w, 8 * w), stem=w)
        self.n_out = self.n_shape + self.n_exp + 9
        self.head = nn.Sequential(nn.Linear(self.backbone.feature_size, int(a["hidden"])), nn.ReLU(),
                                  nn.Linear(int(a["hidden"]), self.n_out))
        self.register_buffer("cam_prior", torch.tensor([float(v) for v in a["cam_prior"]]))
        self.encoder_id = encoder_id

    def reset_parameters(self, seed: int = 0) -> BuiltinEncoder:
        """Deterministic init from ``seed``; the last layer starts near zero (→ mean frontal face)."""
        deterministic_init(self, seed, last_gain=0.01)
        with torch.no_grad():
            self.head[2].bias.zero_()
        return self

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        """(B, 3, 224, 224) RGB in [0, 1] → :class:`EncoderOutput` (float32)."""
        images = self.check_images(images)
        factor = self.input_size // int(self.arch["internal_size"])
        x = F.avg_pool2d(images, factor) if factor > 1 else images
        raw = self.head(self.backbone(x)).float()
        a = self.arch
        ns, ne = self.n_shape, self.n_exp
        prior = self.cam_prior.to(raw)
        s = prior[0] * torch.exp(a["cam_log_scale"] * raw[:, ns + ne + 6: ns + ne + 7])
        t = prior[1:] + a["cam_t_scale"] * raw[:, ns + ne + 7: ns + ne + 9]
        return EncoderOutput(
            shape=raw[:, :ns], expression=raw[:, ns:ns + ne],
            global_pose=a["global_pose_scale"] * raw[:, ns + ne: ns + ne + 3],
            jaw_pose=a["jaw_pose_scale"] * raw[:, ns + ne + 3: ns + ne + 6],
            cam=torch.cat([s, t], dim=1),
        )


def save_builtin(model: BuiltinEncoder, path: str | os.PathLike, training: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` atomically in the builtin format (``training``: JSON-like settings to record).

    The config is passed through JSON so that the file holds only plain types (loadable with weights_only).
    """
    try:
        config = json.loads(json.dumps({"arch": dict(model.arch), "training": dict(training or {})}))
    except TypeError as exc:
        raise ModelFormatError(f"encoder config must be JSON-serialisable: {exc}") from None
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "builtin", "config": config,
            "state_dict": cpu_state_dict(model)}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def read_builtin_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config`` dict of a builtin encoder file (architecture + training record)."""
    return _read(require_file(path, "builtin encoder", BUILTIN_HINT))["config"]


def _read(path: Path) -> dict[str, Any]:
    data = safe_torch_load(path)
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: not a neuface encoder file (format != {FORMAT!r})")
    if data.get("kind") != "builtin":
        raise ModelFormatError(f"{path}: encoder kind is {data.get('kind')!r}, expected 'builtin'")
    if data.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: format_version {data.get('format_version')} (supported: {FORMAT_VERSION})")
    config = data.get("config")
    if not isinstance(config, Mapping) or not isinstance(config.get("arch"), Mapping):
        raise ModelFormatError(f"{path}: missing config.arch")
    return data


def load_builtin(path: str | os.PathLike, device: str | torch.device = "cpu") -> BuiltinEncoder:
    """Load a builtin encoder strictly (eval mode, on ``device``)."""
    path = require_file(path, "builtin encoder", BUILTIN_HINT)
    data = _read(path)
    model = BuiltinEncoder(data["config"]["arch"], encoder_id=f"builtin:{file_sha256(path)[:12]}")
    load_strict(model, data.get("state_dict"), f"{path} [state_dict]")
    return model.to(device).eval()
