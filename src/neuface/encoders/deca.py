"""DECA's coarse encoder ``E_flame`` and EMOCA's expression encoder, with strict loaders and writers.

Formats (read from yfeng95/DECA ``decalib/deca.py``, ``models/encoders.py``, ``models/resnet.py`` and
radekd91/emoca ``gdl/models/DECA.py`` (class ``ExpDECA``), ``gdl/models/DecaEncoder.py``):

* ``deca_model.tar``: a ``torch.save`` dict ``{'E_flame': state_dict, 'E_detail': state_dict, 'D_detail':
  state_dict}`` (training snapshots may add ``opt``, ``global_step``, ``batch_size``). ``E_flame`` is a
  :class:`~neuface.encoders.resnet.ResnetRegressor` with 236 outputs, ``E_detail`` the same with 128.
* EMOCA (``ExpDECA`` with ``expression_backbone='deca_clone'``): a Lightning checkpoint whose ``state_dict``
  holds ``deca.E_flame.*`` (DECA's encoder, frozen) and ``deca.E_expression.*`` (a second
  ``ResnetEncoder`` whose head predicts the 50 expression coefficients; 56 = expression + global/jaw pose
  when EMOCA was trained with ``exp_deca_global_pose`` and ``exp_deca_jaw_pose``). A plain state dict with
  the same keys (``torch.save(ckpt['state_dict'])``) is accepted too.

DECA's own loader silently skips missing or mis-shaped keys; these raise :class:`ModelFormatError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from neuface.encoders.base import DECA_LAYOUT, DECA_PARAM_DIM, EncoderOutput, FlameEncoder, decode_deca_params
from neuface.encoders.checkpoint import (
    cpu_state_dict,
    file_sha256,
    load_strict,
    require_file,
    safe_torch_load,
    sub_state_dict,
)
from neuface.encoders.resnet import ResnetRegressor, deterministic_init
from neuface.errors import ModelFormatError
from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

DECA_HINT = ("download deca_model.tar from the DECA project page (https://deca.is.tue.mpg.de, registration "
             "required; see github.com/yfeng95/DECA fetch_data.sh) and point config at it")
EMOCA_HINT = ("download the EMOCA model (EMOCA/detail/checkpoints/*.ckpt) from the EMOCA project page "
              "(https://emoca.is.tue.mpg.de, registration required; see github.com/radekd91/emoca) and point "
              "config at the .ckpt")
DECA_DETAIL_DIM = 128
EMOCA_EXP_DIMS = (50, 56)


class DecaEncoder(FlameEncoder):
    """DECA's ``E_flame``: (B, 3, 224, 224) RGB in [0, 1] → :class:`EncoderOutput` (float32).

    ``E_flame`` holds the network under DECA's key names (its state dict is the checkpoint's ``E_flame``).
    """

    def __init__(self, encoder_id: str = "deca:untrained"):
        super().__init__()
        self.E_flame = ResnetRegressor(DECA_PARAM_DIM)
        self.encoder_id = encoder_id

    def forward_params(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) → (B, 236) raw DECA code (float32)."""
        return self.E_flame(self.check_images(images)).float()

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        return decode_deca_params(self.forward_params(images))


class EmocaEncoder(DecaEncoder):
    """EMOCA: DECA's ``E_flame`` for shape/pose/camera, ``E_expression`` for the expression (and, with a
    56-d head, the global and jaw pose)."""

    def __init__(self, exp_dim: int = 50, encoder_id: str = "emoca:untrained"):
        super().__init__(encoder_id)
        if exp_dim not in EMOCA_EXP_DIMS:
            raise ModelFormatError(f"EMOCA expression head must have {EMOCA_EXP_DIMS} outputs, got {exp_dim}")
        self.E_expression = ResnetRegressor(exp_dim)
        self.exp_dim = exp_dim

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        images = self.check_images(images)
        out = decode_deca_params(self.E_flame(images).float())
        code = self.E_expression(images).float()
        out.expression = code[:, :50]
        if self.exp_dim == 56:
            out.global_pose, out.jaw_pose = code[:, 50:53], code[:, 53:56]
        return out


def _uninitialised(factory, *args, **kwargs):
    """Build a module without running its default initialisation (parameters allocated on CPU, contents
    undefined): every tensor is then overwritten by a strict load or :func:`deterministic_init`."""
    with torch.device("meta"):
        module = factory(*args, **kwargs)
    return module.to_empty(device="cpu")


def _encoder_id(kind: str, path: Path) -> str:
    return f"{kind}:{file_sha256(path)[:12]}"


def load_deca(path: str | os.PathLike, device: str | torch.device = "cpu") -> DecaEncoder:
    """Load ``E_flame`` of a ``deca_model.tar`` strictly (eval mode, on ``device``).

    Raises:
        AssetMissingError: no file at ``path``.
        UnsafePickleError: the file needs anything beyond tensors/containers to unpickle.
        ModelFormatError: no ``E_flame`` entry, or any missing / unexpected / mis-shaped key (named).
    """
    path = require_file(path, "DECA checkpoint", DECA_HINT)
    data = safe_torch_load(path)
    if not isinstance(data, Mapping) or "E_flame" not in data:
        found = sorted(map(str, data.keys())) if isinstance(data, Mapping) else type(data).__name__
        raise ModelFormatError(f"{path}: not a DECA checkpoint (no 'E_flame' entry; found {found})")
    model = _uninitialised(DecaEncoder, _encoder_id("deca", path))
    load_strict(model.E_flame, data["E_flame"], f"{path} [E_flame]")
    log.info("loaded DECA E_flame from %s (%s)", path, model.encoder_id)
    return model.to(device).eval()


def _deca_code_init(module: ResnetRegressor, seed: int, cam_scale: float) -> None:
    """Deterministic weights whose untrained output is close to a frontal mean face (small last layer, cam
    bias ``(cam_scale, 0, 0)``), so the stand-in checkpoint behaves sensibly in demos."""
    deterministic_init(module, seed, last_gain=0.01)
    with torch.no_grad():
        module.layers[2].bias.zero_()
        module.layers[2].bias[DECA_LAYOUT["cam"][0]] = float(cam_scale)


def write_deca_checkpoint(path: str | os.PathLike, seed: int = 0, include_detail: bool = False,
                          cam_scale: float = 8.0) -> Path:
    """Write a ``deca_model.tar``-format checkpoint from a deterministically initialised network.

    Same container and ``E_flame`` keys as DECA's release (so the real loader is exercised). With
    ``include_detail`` an ``E_detail`` encoder (128 outputs) and an empty ``D_detail`` placeholder are added
    (the detail decoder is not reproduced). Written atomically.
    """
    net = _uninitialised(ResnetRegressor, DECA_PARAM_DIM)
    _deca_code_init(net, seed, cam_scale)
    data: dict = {"E_flame": cpu_state_dict(net)}
    if include_detail:
        detail = _uninitialised(ResnetRegressor, DECA_DETAIL_DIM)
        deterministic_init(detail, seed + 1)
        data["E_detail"] = cpu_state_dict(detail)
        data["D_detail"] = {}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def _emoca_state(data, path: Path) -> tuple[dict, dict]:
    state = data.get("state_dict", data) if isinstance(data, Mapping) else data
    if not isinstance(state, Mapping):
        raise ModelFormatError(f"{path}: not an EMOCA checkpoint (expected a dict with 'state_dict')")
    for prefix in ("deca.", ""):
        flame = sub_state_dict(state, prefix + "E_flame.")
        expr = sub_state_dict(state, prefix + "E_expression.")
        if flame or expr:
            break
    if not expr:
        raise ModelFormatError(f"{path}: no 'deca.E_expression.*' keys: not an EMOCA (ExpDECA) checkpoint")
    if not flame:
        raise ModelFormatError(f"{path}: no 'deca.E_flame.*' keys: not an EMOCA (ExpDECA) checkpoint")
    return flame, expr


def load_emoca(path: str | os.PathLike, device: str | torch.device = "cpu") -> EmocaEncoder:
    """Load EMOCA's ``E_flame`` + ``E_expression`` strictly from a Lightning ``.ckpt`` (or a plain state dict
    with the same keys). Other modules in the file (detail encoder/decoder, loss networks) are ignored.

    Raises:
        AssetMissingError, UnsafePickleError, ModelFormatError (naming the offending key(s)).
    """
    path = require_file(path, "EMOCA checkpoint", EMOCA_HINT)
    data = safe_torch_load(path, allow_lightning_callbacks=True)
    flame, expr = _emoca_state(data, path)
    head = expr.get("layers.2.weight")
    exp_dim = int(head.shape[0]) if isinstance(head, torch.Tensor) and head.dim() == 2 else 50
    if exp_dim not in EMOCA_EXP_DIMS:
        raise ModelFormatError(f"{path}: E_expression.layers.2.weight has {exp_dim} outputs, "
                               f"expected one of {EMOCA_EXP_DIMS}")
    model = _uninitialised(EmocaEncoder, exp_dim, _encoder_id("emoca", path))
    load_strict(model.E_flame, flame, f"{path} [deca.E_flame]")
    load_strict(model.E_expression, expr, f"{path} [deca.E_expression]")
    log.info("loaded EMOCA from %s (%s, expression head %d)", path, model.encoder_id, exp_dim)
    return model.to(device).eval()


def write_emoca_checkpoint(path: str | os.PathLike, seed: int = 0, exp_dim: int = 50,
                           cam_scale: float = 8.0) -> Path:
    """Write an EMOCA-layout Lightning-style checkpoint (``state_dict`` with ``deca.E_flame.*`` and
    ``deca.E_expression.*``, whose backbone is cloned from E_flame as EMOCA initialises it). Atomic."""
    model = _uninitialised(EmocaEncoder, exp_dim)
    _deca_code_init(model.E_flame, seed, cam_scale)
    deterministic_init(model.E_expression, seed + 1, last_gain=0.01)
    model.E_expression.encoder.load_state_dict(model.E_flame.encoder.state_dict())
    state = {f"deca.E_flame.{k}": v for k, v in cpu_state_dict(model.E_flame).items()}
    state.update({f"deca.E_expression.{k}": v for k, v in cpu_state_dict(model.E_expression).items()})
    data = {"state_dict": state, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.4.9"}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)
