"""Read and write FLAME-format head models and DECA-format landmark embeddings, safely.

Formats (checked against the public loaders of FLAME / DECA / smplx):

* FLAME 2020 ``generic_model.pkl``: a Python-2 pickle (protocol 2, read with ``encoding='latin1'``) of a
  dict: ``f`` (F, 3), ``v_template`` (V, 3), ``shapedirs`` (V, 3, 400) (a ``chumpy.ch.Ch``: its array is the
  ``x`` entry of the pickled ``__dict__``), ``posedirs`` (V, 3, 36), ``J_regressor`` (J, V)
  ``scipy.sparse.csc_matrix``, ``weights`` (V, J), ``kintree_table`` (2, J) (row 0 = parents, the root's
  stored as 2**32 - 1), ``J`` (J, 3), ``bs_style`` ``'lbs'``, ``bs_type`` ``'lrotmin'``. FLAME 2023 files
  are newer pickles of the same dict (``numpy.core.numeric._frombuffer``, ``scipy.sparse._csc``). chumpy does
  not import on modern Python/numpy, so chumpy classes are replaced by stubs that keep their state.
* DECA ``landmark_embedding.npy``: a ``.npy`` holding a 0-d object array whose item is a dict; the
  ``dynamic_lmk_*`` entries are torch tensors, the others numpy arrays (``full_lmk_*`` stored as (1, 68) and
  (1, 68, 3)).

A pickle can run arbitrary code, so nothing here calls :func:`pickle.load` / ``np.load(allow_pickle=True)``:
pickles go through :class:`~neuface.flame.safe_pickle.RestrictedUnpickler` (allow-listed globals only,
:class:`~neuface.errors.UnsafePickleError` naming ``module.name`` before anything runs); torch tensors are
rebuilt with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.lib import format as npy_format

from neuface.errors import AssetMissingError, ModelFormatError
from neuface.flame.model import FlameModel, LandmarkEmbedding
from neuface.flame.safe_pickle import (
    ChumpyObject,
    Py2Pickler,
    RestrictedUnpickler,
    restricted_loads,
    restricted_unpickler,
    to_dense_array,
)
from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "RestrictedUnpickler",
    "restricted_unpickler",
    "restricted_loads",
    "to_dense_array",
    "ChumpyObject",
    "load_flame_model",
    "flame_model_from_dict",
    "write_flame_pickle",
    "write_flame_npz",
    "load_landmark_embedding",
    "write_landmark_embedding",
]

#: FLAME 2020/2023: 400 shapedirs columns = 300 identity + 100 expression.
FLAME_SHAPEDIRS_COLUMNS = 400
FLAME_NUM_SHAPE = 300
_ROOT_PARENT = 2**32 - 1  # how SMPL/FLAME files store the root's "parent" in kintree_table


# ----------------------------------------------------------------------------------------- FLAME model


def _unpickle_error(source: str, exc: Exception) -> ModelFormatError:
    if isinstance(exc, ModelFormatError):
        return type(exc)(f"{source}: {exc}")
    return ModelFormatError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})")


def _check_exists(path: str | os.PathLike, what: str, hint: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AssetMissingError(f"{what} not found: {path} ({hint})")
    return path


def load_flame_model(path: str | os.PathLike, num_shape_total: int | None = None) -> FlameModel:
    """Load a FLAME-format model from a ``.pkl`` (FLAME 2020/2023 layout) or ``.npz`` with the same keys.

    Args:
        path: model file; the format is detected from its first bytes (zip → npz, else pickle).
        num_shape_total: number of identity columns in ``shapedirs``. Default: the file's ``num_shape_total``
            key if present, else 300 when ``shapedirs`` has 400 columns (FLAME 2020/2023); required otherwise.

    Raises:
        AssetMissingError: the file does not exist.
        UnsafePickleError: the pickle asks for a non-allow-listed global (nothing from it was executed).
        ModelFormatError: missing key, wrong shape/dtype (the message names the key).
    """
    path = _check_exists(path, "FLAME model", "get generic_model.pkl from https://flame.is.tue.mpg.de")
    source = str(path)
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip:
        try:
            with np.load(path, allow_pickle=False) as npz:
                raw: dict[str, Any] = {k: npz[k] for k in npz.files}
        except Exception as exc:  # bad zip, object arrays (allow_pickle=False), truncated members...
            msg = f"{source}: unreadable npz ({type(exc).__name__}: {exc}); object arrays are not accepted"
            raise ModelFormatError(msg) from None
    else:
        try:
            with open(path, "rb") as fh:
                raw = RestrictedUnpickler(fh).load()
        except Exception as exc:  # any failure of the unpickler means a bad file
            raise _unpickle_error(source, exc) from None
        if not isinstance(raw, dict):
            raise ModelFormatError(f"{source}: expected a dict of arrays, got {type(raw).__name__}")
    model = flame_model_from_dict(raw, source=source, num_shape_total=num_shape_total)
    log.debug("loaded FLAME model %s: V=%d, K=%d", source, model.num_vertices, model.shapedirs.shape[2])
    return model


def flame_model_from_dict(
    raw: dict[str, Any], source: str = "FLAME model", num_shape_total: int | None = None
) -> FlameModel:
    """Validate a dict with FLAME file keys (see :func:`load_flame_model`) into a :class:`FlameModel`."""
    required = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights")
    missing = [k for k in required if k not in raw]
    if "kintree_table" not in raw and "parents" not in raw:
        missing.append("kintree_table")
    if missing:
        raise ModelFormatError(f"{source}: missing key(s) {missing} (found {sorted(map(str, raw))})")
    arrays = {k: to_dense_array(raw[k], f"{source}: {k}") for k in raw if k in _ARRAY_KEYS}
    faces = arrays["f"]
    if not np.issubdtype(faces.dtype, np.integer):
        raise ModelFormatError(f"{source}: f must be integer, got {faces.dtype}")
    parents = _parents_from(arrays, source)
    shapedirs = arrays["shapedirs"]
    if shapedirs.ndim != 3:
        raise ModelFormatError(f"{source}: shapedirs must be (V, 3, K), got {shapedirs.shape}")
    if num_shape_total is None and "num_shape_total" in arrays:
        num_shape_total = int(arrays["num_shape_total"])
    if num_shape_total is None:
        if shapedirs.shape[2] != FLAME_SHAPEDIRS_COLUMNS:
            raise ModelFormatError(
                f"{source}: shapedirs has {shapedirs.shape[2]} columns "
                f"(FLAME 2020/2023 have {FLAME_SHAPEDIRS_COLUMNS}); "
                "pass num_shape_total= (identity columns) or store a 'num_shape_total' key"
            )
        num_shape_total = FLAME_NUM_SHAPE
    model = FlameModel(
        v_template=arrays["v_template"].astype(np.float64),
        faces=faces.astype(np.int64),
        shapedirs=shapedirs.astype(np.float64),
        posedirs=arrays["posedirs"].astype(np.float64),
        J_regressor=arrays["J_regressor"].astype(np.float64),
        weights=arrays["weights"].astype(np.float64),
        parents=parents,
        num_shape_total=int(num_shape_total),
    )
    try:
        return model.validate()
    except ModelFormatError as exc:
        raise ModelFormatError(f"{source}: {exc}") from None


_ARRAY_KEYS = (
    "v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "parents",
    "num_shape_total",
)


def _parents_from(arrays: dict[str, np.ndarray], source: str) -> np.ndarray:
    if "kintree_table" not in arrays:
        parents = arrays["parents"].astype(np.int64).reshape(-1)
        return parents
    kt = arrays["kintree_table"]
    if kt.ndim != 2 or kt.shape[0] != 2 or not np.issubdtype(kt.dtype, np.integer):
        raise ModelFormatError(
            f"{source}: kintree_table must be an integer (2, J) array, got {kt.shape} {kt.dtype}"
        )
    ids = kt[1].astype(np.int64)
    column_of = {int(joint_id): col for col, joint_id in enumerate(ids)}
    parents = np.full(kt.shape[1], -1, dtype=np.int64)
    for col in range(1, kt.shape[1]):
        parent_id = int(kt[0, col])
        if parent_id not in column_of:
            msg = f"{source}: kintree_table parent {parent_id} of joint {col} is not a joint id"
            raise ModelFormatError(msg)
        parents[col] = column_of[parent_id]
    return parents


def _flame_file_dict(model: FlameModel, chumpy_style: bool) -> dict[str, Any]:
    model.validate()
    n_j = model.num_joints
    kintree = np.stack([model.parents.astype(np.int64), np.arange(n_j, dtype=np.int64)])
    kintree[0, 0] = _ROOT_PARENT
    faces = model.faces.astype(np.uint32 if model.faces.max(initial=0) < 2**32 else np.int64)
    v_template = model.v_template.astype(np.float64)
    shapedirs = model.shapedirs.astype(np.float64)
    data: dict[str, Any] = {
        "f": faces,
        "J_regressor": sp.csc_matrix(model.J_regressor.astype(np.float64)),
        "kintree_table": kintree,
        "J": model.J_regressor @ v_template,
        "weights": model.weights.astype(np.float64),
        "posedirs": model.posedirs.astype(np.float64),
        "v_template": ChumpyObject.ch(v_template) if chumpy_style else v_template,
        "shapedirs": ChumpyObject.ch(shapedirs) if chumpy_style else shapedirs,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    if not (model.shapedirs.shape[2] == FLAME_SHAPEDIRS_COLUMNS and model.num_shape_total == FLAME_NUM_SHAPE):
        data["num_shape_total"] = int(model.num_shape_total)
    return data


def write_flame_pickle(model: FlameModel, path: str | os.PathLike, chumpy_style: bool = True) -> Path:
    """Write ``model`` in the FLAME 2020 ``generic_model.pkl`` layout (protocol 2, Python-2 readable names).

    ``v_template`` and ``shapedirs`` are written as ``chumpy.ch.Ch`` objects when ``chumpy_style`` (loadable
    by real chumpy and by :func:`load_flame_model`, which needs no chumpy), ``J_regressor`` as a
    ``scipy.sparse.csc_matrix``, ``kintree_table`` as (2, J) int64. A ``num_shape_total`` key is added only
    when the model is not 300 + 100 columns. Written atomically.
    """
    data = _flame_file_dict(model, chumpy_style)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        Py2Pickler(fh, protocol=2).dump(data)
    return path


def write_flame_npz(model: FlameModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as an ``.npz`` with the FLAME keys (dense ``J_regressor``, ``num_shape_total``)."""
    model.validate()
    n_j = model.num_joints
    kintree = np.stack([model.parents.astype(np.int64), np.arange(n_j, dtype=np.int64)])
    kintree[0, 0] = _ROOT_PARENT
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh, v_template=model.v_template, f=model.faces.astype(np.int64), shapedirs=model.shapedirs,
            posedirs=model.posedirs, J_regressor=model.J_regressor, weights=model.weights,
            kintree_table=kintree, num_shape_total=np.int64(model.num_shape_total),
        )
    return path


# ----------------------------------------------------------------------------------------- landmark embedding

_EMBEDDING_KEYS = (
    "static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
    "full_lmk_faces_idx", "full_lmk_bary_coords",
)


def load_landmark_embedding(path: str | os.PathLike, num_faces: int | None = None) -> LandmarkEmbedding:
    """Load DECA's ``landmark_embedding.npy`` without ``allow_pickle``: the ``.npy`` header is parsed with
    :mod:`numpy.lib.format` and the object payload unpickled by :class:`RestrictedUnpickler` (torch tensors
    rebuilt weights-only). ``full_lmk_*`` are squeezed to (68,) / (68, 3); indices become int64, barycentric
    coordinates float64. ``num_faces`` (optional) bounds the face indices.
    """
    path = _check_exists(path, "landmark embedding", "DECA's data/landmark_embedding.npy")
    source = str(path)
    try:
        with open(path, "rb") as fh:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(fh)
            else:
                raise ModelFormatError(f"unsupported .npy version {version}")
            if dtype != np.dtype(object) or shape != ():
                raise ModelFormatError(f"expected a 0-d object array holding a dict, got {dtype} {shape}")
            payload = RestrictedUnpickler(fh, allow_torch=True).load()
    except Exception as exc:  # any failure of the header parser / unpickler means a bad file
        raise _unpickle_error(source, exc) from None
    content = payload[()] if isinstance(payload, np.ndarray) and payload.dtype == object else payload
    if not isinstance(content, dict):
        raise ModelFormatError(f"{source}: expected a dict, got {type(content).__name__}")
    missing = [k for k in _EMBEDDING_KEYS if k not in content]
    if missing:
        raise ModelFormatError(f"{source}: missing key(s) {missing} (found {sorted(map(str, content))})")
    arrays = {k: to_dense_array(content[k], f"{source}: {k}") for k in _EMBEDDING_KEYS}
    for key in ("full_lmk_faces_idx", "full_lmk_bary_coords"):
        if arrays[key].ndim >= 2 and arrays[key].shape[0] == 1:
            arrays[key] = arrays[key][0]
    for key, arr in arrays.items():
        if key.endswith("faces_idx"):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ModelFormatError(f"{source}: {key} must be integer, got {arr.dtype}")
            arrays[key] = arr.astype(np.int64)
        else:
            arrays[key] = arr.astype(np.float64)
    emb = LandmarkEmbedding(**arrays)
    try:
        return emb.validate(num_faces)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{source}: {exc}") from None


def write_landmark_embedding(emb: LandmarkEmbedding, path: str | os.PathLike) -> Path:
    """Write ``emb`` in DECA's exact layout: ``.npy`` of a 0-d object array holding a dict; ``dynamic_lmk_*``
    as torch tensors (int64 / float64), the rest numpy (``full_lmk_*`` as (1, 68) / (1, 68, 3)). Atomic."""
    import torch

    emb.validate()
    content = {
        "static_lmk_faces_idx": emb.static_lmk_faces_idx.astype(np.int64),
        "static_lmk_bary_coords": emb.static_lmk_bary_coords.astype(np.float64),
        "dynamic_lmk_faces_idx": torch.from_numpy(emb.dynamic_lmk_faces_idx.astype(np.int64)),
        "dynamic_lmk_bary_coords": torch.from_numpy(emb.dynamic_lmk_bary_coords.astype(np.float64)),
        "full_lmk_faces_idx": emb.full_lmk_faces_idx.astype(np.int64)[None],
        "full_lmk_bary_coords": emb.full_lmk_bary_coords.astype(np.float64)[None],
    }
    holder = np.empty((), dtype=object)
    holder[()] = content
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, holder, allow_pickle=True)
    return path
