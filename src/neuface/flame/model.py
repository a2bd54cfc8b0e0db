"""In-memory containers for a FLAME-format head model and a DECA-format landmark embedding.

These hold plain numpy arrays exactly as read from disk (float64 geometry, int64 indices) and validate keys,
shapes and index ranges with clear :class:`~neuface.errors.ModelFormatError` messages. :mod:`neuface.flame.io`
reads/writes them; :class:`~neuface.flame.layer.FlameLayer` turns them into torch buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuface.errors import ModelFormatError

#: FLAME's kinematic tree: 0 global, 1 neck, 2 jaw, 3 left eye, 4 right eye.
FLAME_PARENTS = (-1, 0, 1, 1, 1)
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ModelFormatError(msg)


@dataclass
class FlameModel:
    """A FLAME-format statistical head model.

    Attributes:
        v_template: (V, 3) mean head, metres.
        faces: (F, 3) int64 triangle vertex indices (the file's ``f``).
        shapedirs: (V, 3, K) blendshapes; columns ``[0, num_shape_total)`` identity, the rest expression.
        posedirs: (V, 3, 9 * (J - 1)) pose-corrective blendshapes (FLAME file layout, before reshaping).
        J_regressor: (J, V) dense joint regressor.
        weights: (V, J) linear-blend-skinning weights.
        parents: (J,) int64 kinematic parents, ``parents[0] == -1``.
        num_shape_total: number of identity columns in ``shapedirs`` (300 for FLAME 2020/2023).
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    num_shape_total: int = 300

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_expression_total(self) -> int:
        return int(self.shapedirs.shape[2]) - self.num_shape_total

    def validate(self) -> FlameModel:
        """Check shapes, dtypes and index ranges; returns ``self``. Raises ModelFormatError."""
        v = self.v_template
        _require(v.ndim == 2 and v.shape[1] == 3, f"v_template must be (V, 3), got {v.shape}")
        n_v = v.shape[0]
        _require(self.faces.ndim == 2 and self.faces.shape[1] == 3, f"f must be (F, 3), got {self.faces.shape}")
        _require(np.issubdtype(self.faces.dtype, np.integer), f"f must be integer, got {self.faces.dtype}")
        _require(
            self.faces.size == 0 or (self.faces.min() >= 0 and self.faces.max() < n_v),
            f"f indexes vertices outside [0, {n_v})",
        )
        sd = self.shapedirs
        _require(sd.ndim == 3 and sd.shape[:2] == (n_v, 3), f"shapedirs must be ({n_v}, 3, K), got {sd.shape}")
        _require(
            0 < self.num_shape_total <= sd.shape[2],
            f"num_shape_total={self.num_shape_total} but shapedirs has {sd.shape[2]} columns",
        )
        n_j = self.parents.shape[0]
        _require(self.parents.ndim == 1 and n_j >= 1, f"parents must be (J,), got {self.parents.shape}")
        _require(int(self.parents[0]) == -1, "parents[0] must be -1 (root)")
        _require(
            all(0 <= int(p) < i for i, p in enumerate(self.parents[1:], start=1)),
            f"parents must list each joint after its parent, got {self.parents.tolist()}",
        )
        pd = self.posedirs
        _require(
            pd.ndim == 3 and pd.shape == (n_v, 3, 9 * (n_j - 1)),
            f"posedirs must be ({n_v}, 3, {9 * (n_j - 1)}), got {pd.shape}",
        )
        _require(
            self.J_regressor.shape == (n_j, n_v),
            f"J_regressor must be ({n_j}, {n_v}), got {self.J_regressor.shape}",
        )
        _require(self.weights.shape == (n_v, n_j), f"weights must be ({n_v}, {n_j}), got {self.weights.shape}")
        for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
            arr = getattr(self, name)
            _require(np.issubdtype(arr.dtype, np.floating), f"{name} must be floating point, got {arr.dtype}")
            _require(bool(np.isfinite(arr).all()), f"{name} contains non-finite values")
        return self


@dataclass
class LandmarkEmbedding:
    """DECA-format barycentric landmark embedding on the FLAME mesh.

    Attributes:
        static_lmk_faces_idx: (51,) faces of the 51 inner landmarks (iBUG 17..67).
        static_lmk_bary_coords: (51, 3) barycentric coordinates.
        dynamic_lmk_faces_idx: (79, 17) contour-landmark faces for each integer yaw bin.
        dynamic_lmk_bary_coords: (79, 17, 3).
        full_lmk_faces_idx: (68,) faces of the pose-independent "3D" landmarks (file stores (1, 68)).
        full_lmk_bary_coords: (68, 3) (file stores (1, 68, 3)).
    """

    static_lmk_faces_idx: np.ndarray
    static_lmk_bary_coords: np.ndarray
    dynamic_lmk_faces_idx: np.ndarray
    dynamic_lmk_bary_coords: np.ndarray
    full_lmk_faces_idx: np.ndarray
    full_lmk_bary_coords: np.ndarray

    def validate(self, num_faces: int | None = None) -> LandmarkEmbedding:
        """Check shapes (and face indices < ``num_faces`` if given); returns ``self``."""
        expected = {
            "static_lmk_faces_idx": (51,),
            "static_lmk_bary_coords": (51, 3),
            "dynamic_lmk_faces_idx": (79, 17),
            "dynamic_lmk_bary_coords": (79, 17, 3),
            "full_lmk_faces_idx": (68,),
            "full_lmk_bary_coords": (68, 3),
        }
        for name, shape in expected.items():
            arr = getattr(self, name)
            _require(arr.shape == shape, f"landmark embedding {name} must be {shape}, got {arr.shape}")
            if name.endswith("faces_idx"):
                _require(np.issubdtype(arr.dtype, np.integer), f"{name} must be integer, got {arr.dtype}")
                _require(arr.min() >= 0, f"{name} has negative face indices")
                if num_faces is not None:
                    _require(arr.max() < num_faces, f"{name} indexes faces outside [0, {num_faces})")
            else:
                _require(bool(np.isfinite(arr).all()), f"{name} contains non-finite values")
        return self
