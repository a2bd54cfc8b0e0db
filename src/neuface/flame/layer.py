"""``FlameLayer``: a stateless differentiable FLAME (mesh, joints, 68 landmarks) as an ``nn.Module``.

Parameters follow the NeuFace paper / DECA: identity β (``n_shape`` ≤ 300), expression ψ (``n_exp`` ≤ 100),
global rotation r (3, axis-angle) and θ (12) = neck 3 + jaw 3 + left eye 3 + right eye 3. Model constants are
buffers (they follow ``.to(device / dtype)``); the layer has no parameters and no per-call state.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError
from neuface.flame.io import load_flame_model, load_landmark_embedding
from neuface.flame.landmarks import dynamic_contour, vertices2landmarks
from neuface.flame.lbs import batch_rodrigues, lbs
from neuface.flame.model import FlameModel, LandmarkEmbedding

__all__ = ["FlameLayer", "FlameOutput"]


class FlameOutput(NamedTuple):
    """Output of :class:`FlameLayer` (model space, metres).

    Attributes:
        vertices: (B, V, 3).
        joints: (B, J, 3) posed joints (FLAME: global, neck, jaw, left eye, right eye).
        landmarks2d: (B, 68, 3) iBUG landmarks with the yaw-dependent contour (for 2D losses); ``None``
            without a landmark embedding.
        landmarks3d: (B, 68, 3) pose-independent "3D" landmarks (``full_lmk_*``); ``None`` without embedding.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks2d: torch.Tensor | None
    landmarks3d: torch.Tensor | None


class FlameLayer(nn.Module):
    """Differentiable FLAME.

    Args:
        model: the head model (:func:`~neuface.flame.io.load_flame_model`).
        embedding: DECA landmark embedding, or ``None`` (then no landmarks are computed).
        n_shape: identity coefficients used (columns ``[0, n_shape)`` of ``shapedirs``).
        n_exp: expression coefficients used (columns ``[num_shape_total, num_shape_total + n_exp)``).
        dtype: floating dtype of the buffers.

    Raises:
        ShapeError: ``n_shape`` / ``n_exp`` out of range for the model.
    """

    faces: torch.Tensor
    parents: torch.Tensor

    def __init__(
        self,
        model: FlameModel,
        embedding: LandmarkEmbedding | None = None,
        n_shape: int = 100,
        n_exp: int = 50,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        model.validate()
        if not 0 <= n_shape <= model.num_shape_total:
            raise ShapeError(f"n_shape={n_shape} must be in [0, {model.num_shape_total}] for this model")
        if not 0 <= n_exp <= model.num_expression_total:
            raise ShapeError(f"n_exp={n_exp} must be in [0, {model.num_expression_total}] for this model")
        if not dtype.is_floating_point:
            raise ShapeError(f"dtype must be floating point, got {dtype}")
        self.n_shape, self.n_exp = int(n_shape), int(n_exp)
        nst = model.num_shape_total
        shapedirs = np.concatenate(
            [model.shapedirs[:, :, :n_shape], model.shapedirs[:, :, nst : nst + n_exp]], axis=2
        )

        def buf(name: str, array: np.ndarray, kind: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array)).to(kind))

        buf("v_template", model.v_template)
        buf("shapedirs", shapedirs)
        buf("posedirs", model.posedirs)
        buf("J_regressor", model.J_regressor)
        buf("lbs_weights", model.weights)
        buf("faces", model.faces, torch.long)
        buf("parents", model.parents, torch.long)
        self._parents = tuple(int(p) for p in model.parents)  # host copy: no device sync per call
        self.has_landmarks = embedding is not None
        if embedding is not None:
            embedding.validate(num_faces=model.faces.shape[0])
            buf("static_lmk_faces_idx", embedding.static_lmk_faces_idx, torch.long)
            buf("static_lmk_bary_coords", embedding.static_lmk_bary_coords)
            buf("dynamic_lmk_faces_idx", embedding.dynamic_lmk_faces_idx, torch.long)
            buf("dynamic_lmk_bary_coords", embedding.dynamic_lmk_bary_coords)
            buf("full_lmk_faces_idx", embedding.full_lmk_faces_idx, torch.long)
            buf("full_lmk_bary_coords", embedding.full_lmk_bary_coords)

    @classmethod
    def from_files(
        cls,
        model_path: str | os.PathLike,
        embedding_path: str | os.PathLike | None = None,
        num_shape_total: int | None = None,
        **kwargs,
    ) -> FlameLayer:
        """Load the model (and embedding) with :mod:`neuface.flame.io`; ``kwargs`` go to the constructor."""
        model = load_flame_model(model_path, num_shape_total=num_shape_total)
        embedding = None if embedding_path is None else load_landmark_embedding(embedding_path)
        return cls(model, embedding, **kwargs)

    @property
    def num_joints(self) -> int:
        return len(self._parents)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def extra_repr(self) -> str:
        return (
            f"V={self.num_vertices}, F={self.faces.shape[0]}, J={self.num_joints}, n_shape={self.n_shape}, "
            f"n_exp={self.n_exp}, landmarks={self.has_landmarks}, dtype={self.v_template.dtype}"
        )

    def forward(
        self,
        shape: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        global_pose: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> FlameOutput:
        """Evaluate FLAME. Inputs are (B, ...) with one batch dim; ``None`` means zeros.

        Args:
            shape: (B, n_shape) identity β.
            expression: (B, n_exp) expression ψ.
            global_pose: (B, 3) axis-angle of the root (head) joint r.
            pose: (B, 3 (J-1)) axis-angle of the other joints; FLAME: (B, 12) = [neck, jaw, left eye,
                right eye].
            batch_size: B when every input is ``None`` (default 1).
        Returns:
            :class:`FlameOutput`.
        """
        n_j = self.num_joints
        inputs = {
            "shape": (shape, self.n_shape),
            "expression": (expression, self.n_exp),
            "global_pose": (global_pose, 3),
            "pose": (pose, 3 * (n_j - 1)),
        }
        sizes: dict[str, int] = {}
        for name, (x, width) in inputs.items():
            if x is not None:
                check_shape(x, name, ("B", width), sizes)
                check_floating(x, name)
        if "B" not in sizes:
            sizes["B"] = 1 if batch_size is None else int(batch_size)
        elif batch_size is not None and batch_size != sizes["B"]:
            raise ShapeError(f"batch_size={batch_size} but the inputs have B={sizes['B']}")
        dtype = self.v_template.dtype
        coeffs = {
            name: self.v_template.new_zeros(sizes["B"], width) if x is None else x.to(dtype)
            for name, (x, width) in inputs.items()
        }
        betas = torch.cat([coeffs["shape"], coeffs["expression"]], dim=1)
        full_pose = torch.cat([coeffs["global_pose"], coeffs["pose"]], dim=1).reshape(sizes["B"], n_j, 3)
        rot_mats = batch_rodrigues(full_pose)
        vertices, joints = lbs(
            betas, rot_mats, self.v_template, self.shapedirs, self.posedirs, self.J_regressor,
            self._parents, self.lbs_weights,
        )
        if not self.has_landmarks:
            return FlameOutput(vertices, joints, None, None)
        dyn_faces, dyn_bary = dynamic_contour(
            rot_mats, self.dynamic_lmk_faces_idx, self.dynamic_lmk_bary_coords, self._parents, neck_index=1
        )
        n_b = sizes["B"]
        faces_idx = torch.cat([dyn_faces, self.static_lmk_faces_idx.expand(n_b, -1)], dim=1)
        bary = torch.cat([dyn_bary, self.static_lmk_bary_coords.expand(n_b, -1, -1)], dim=1)
        landmarks2d = vertices2landmarks(vertices, self.faces, faces_idx, bary)
        landmarks3d = vertices2landmarks(
            vertices, self.faces, self.full_lmk_faces_idx, self.full_lmk_bary_coords
        )
        return FlameOutput(vertices, joints, landmarks2d, landmarks3d)
