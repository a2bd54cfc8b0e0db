"""The encoder interface the annotators use: crops in, FLAME + camera parameters out.

An encoder Φ_w maps (B, 3, 224, 224) RGB crops in [0, 1] (no mean/std normalisation, as DECA) to FLAME
parameters and a weak-perspective camera in crop NDC. NeuFace optimizes its weights w; ``regress`` runs it once.
DECA's 236-d output layout is decoded by :func:`decode_deca_params`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from neuface.checks import check_shape
from neuface.errors import ShapeError

#: DECA's E_flame output layout (slices of the 236-d vector).
DECA_LAYOUT = {
    "shape": (0, 100),
    "tex": (100, 150),
    "expression": (150, 200),
    "pose": (200, 206),  # global rotation 3 + jaw 3, axis-angle
    "cam": (206, 209),  # (s, tx, ty)
    "light": (209, 236),
}
DECA_PARAM_DIM = 236


@dataclass
class EncoderOutput:
    """Per-image parameters predicted by an encoder (all (B, ·) tensors).

    Attributes:
        shape: (B, 100) β.  expression: (B, 50) ψ.  global_pose: (B, 3) r.  jaw_pose: (B, 3).
        cam: (B, 3) weak perspective ``(s, tx, ty)`` in crop NDC.
    """

    shape: torch.Tensor
    expression: torch.Tensor
    global_pose: torch.Tensor
    jaw_pose: torch.Tensor
    cam: torch.Tensor

    def pose12(self) -> torch.Tensor:
        """(B, 12) θ = [neck 0, jaw, eyes 0] as FlameLayer expects."""
        zeros = torch.zeros_like(self.jaw_pose)
        return torch.cat([zeros, self.jaw_pose, zeros, zeros], dim=-1)

    def detach(self) -> EncoderOutput:
        return EncoderOutput(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def index(self, idx) -> EncoderOutput:
        return EncoderOutput(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def cat(outputs: list[EncoderOutput]) -> EncoderOutput:
        names = [f.name for f in fields(EncoderOutput)]
        return EncoderOutput(**{n: torch.cat([getattr(o, n) for o in outputs]) for n in names})


def decode_deca_params(params: torch.Tensor) -> EncoderOutput:
    """Split DECA's (B, 236) output vector into :class:`EncoderOutput` (texture and light are dropped)."""
    check_shape(params, "params", ("B", DECA_PARAM_DIM))

    def part(name: str) -> torch.Tensor:
        lo, hi = DECA_LAYOUT[name]
        return params[:, lo:hi]

    pose = part("pose")
    return EncoderOutput(shape=part("shape"), expression=part("expression"), global_pose=pose[:, :3],
                         jaw_pose=pose[:, 3:], cam=part("cam"))


class FlameEncoder(nn.Module):
    """Base class: subclasses implement :meth:`forward` and set :attr:`encoder_id`.

    ``encoder_id`` names the architecture and the weights (e.g. ``"deca:<sha256 prefix>"``) and is written into
    every fit, so datasets record what produced them.
    """

    input_size: int = 224
    n_shape: int = 100
    n_exp: int = 50
    encoder_id: str = "unknown"

    _bn_frozen: bool = False

    def forward(self, images: torch.Tensor) -> EncoderOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        """Validate (B, 3, S, S) crops (S = :attr:`input_size`); returns them in the module's memory format."""
        check_shape(images, "images", ("B", 3, self.input_size, self.input_size))
        if not torch.is_floating_point(images):
            raise ShapeError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        if getattr(self, "_channels_last", False):
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def to_channels_last(self) -> FlameEncoder:
        """Store conv weights (and convert inputs) channels-last, usually faster on CPU (oneDNN) and GPU."""
        self._channels_last = True
        return self.to(memory_format=torch.channels_last)

    def freeze_batchnorm(self, freeze_affine: bool = False) -> FlameEncoder:
        """Keep every BatchNorm in eval mode (running statistics used and never updated), also after
        ``.train()``; with ``freeze_affine`` their weight/bias also stop requiring gradients."""
        self._bn_frozen = True
        freeze_batchnorm(self, freeze_affine)
        return self

    def train(self, mode: bool = True) -> FlameEncoder:
        super().train(mode)
        if self._bn_frozen:
            freeze_batchnorm(self, freeze_affine=None)
        return self


def freeze_batchnorm(module: nn.Module, freeze_affine: bool | None = False) -> nn.Module:
    """Put every BatchNorm layer of ``module`` in eval mode; ``freeze_affine=True`` also sets
    ``requires_grad=False`` on their affine parameters (``None`` leaves requires_grad untouched).

    NeuFace optimizes the encoder with BN frozen: batch statistics of a 20-frame window of one person would
    otherwise replace the statistics learnt on the training set.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            if freeze_affine is not None:
                for p in m.parameters(recurse=False):
                    p.requires_grad_(not freeze_affine)
    return module
