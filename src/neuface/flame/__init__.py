"""FLAME head model: safe file I/O, linear blend skinning, landmarks and the differentiable ``FlameLayer``.

* :mod:`neuface.flame.model` — ``FlameModel`` / ``LandmarkEmbedding`` containers (numpy, validated).
* :mod:`neuface.flame.io` — FLAME ``.pkl`` / ``.npz`` and DECA ``landmark_embedding.npy`` readers/writers
  (restricted unpickling via :mod:`neuface.flame.safe_pickle`; no chumpy needed).
* :mod:`neuface.flame.lbs` — pure LBS functions.
* :mod:`neuface.flame.landmarks` — barycentric landmarks and DECA's yaw-dependent contour.
* :mod:`neuface.flame.layer` — ``FlameLayer(nn.Module)``.
"""

from neuface.flame.io import (
    load_flame_model,
    load_landmark_embedding,
    write_flame_npz,
    write_flame_pickle,
    write_landmark_embedding,
)
from neuface.flame.landmarks import dynamic_contour, vertices2landmarks
from neuface.flame.layer import FlameLayer, FlameOutput
from neuface.flame.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, lbs, vertices2joints
from neuface.flame.model import FLAME_PARENTS, JOINT_NAMES, FlameModel, LandmarkEmbedding
from neuface.flame.safe_pickle import RestrictedUnpickler, restricted_loads, restricted_unpickler

__all__ = [
    "FLAME_PARENTS",
    "JOINT_NAMES",
    "FlameLayer",
    "FlameModel",
    "FlameOutput",
    "LandmarkEmbedding",
    "RestrictedUnpickler",
    "batch_rigid_transform",
    "batch_rodrigues",
    "blend_shapes",
    "dynamic_contour",
    "lbs",
    "load_flame_model",
    "load_landmark_embedding",
    "restricted_loads",
    "restricted_unpickler",
    "vertices2joints",
    "vertices2landmarks",
    "write_flame_npz",
    "write_flame_pickle",
    "write_landmark_embedding",
]
