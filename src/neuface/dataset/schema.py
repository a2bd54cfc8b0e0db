"""Array schemas shared by the fit files (``neuface.fit``) and the packed dataset (``neuface.dataset``).

A schema maps a dataset name to ``(shape spec, dtype kind)``; a shape spec uses ints (exact sizes) and strings
(named sizes that must agree across datasets: ``F`` frames, ``V`` views, ``S`` identity coefficients, ``E``
expression coefficients). :func:`check_group` checks one HDF5 group against a schema using only metadata
(no data read), so it is cheap enough to run on every file.

The full layout of the packed file is documented in ``docs/dataset.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Root ``format`` attribute of the fit files and of the packed dataset.
FIT_FORMAT = "neuface.fit"
DATASET_FORMAT = "neuface.dataset"
DATASET_FORMAT_VERSION = 1

#: Per-sequence arrays, in the order they are written. ``kind``: ``f`` floating, ``b`` bool, ``i`` integer.
SEQUENCE_ARRAYS: dict[str, tuple[tuple[int | str, ...], str]] = {
    "shape": (("S",), "f"),
    "expression": (("F", "V", "E"), "f"),
    "global_pose": (("F", "V", 3), "f"),
    "pose": (("F", "V", 12), "f"),
    "cam": (("F", "V", 3), "f"),
    "crop_transforms": (("F", "V", 3, 3), "f"),
    "landmarks": (("F", "V", 68, 2), "f"),
    "landmarks_pred": (("F", "V", 68, 2), "f"),
    "detected": (("F", "V"), "b"),
}
#: The fit file has the same arrays as a packed sequence (minus ``frame_indices``).
FIT_ARRAYS = SEQUENCE_ARRAYS
DATASET_ARRAYS: dict[str, tuple[tuple[int | str, ...], str]] = {**SEQUENCE_ARRAYS, "frame_indices": (("F",), "i")}

#: Storage dtype of each packed array.
DATASET_DTYPES: dict[str, np.dtype] = {
    "shape": np.dtype(np.float32),
    "expression": np.dtype(np.float32),
    "global_pose": np.dtype(np.float32),
    "pose": np.dtype(np.float32),
    "cam": np.dtype(np.float32),
    "crop_transforms": np.dtype(np.float64),
    "landmarks": np.dtype(np.float32),
    "landmarks_pred": np.dtype(np.float32),
    "detected": np.dtype(bool),
    "frame_indices": np.dtype(np.int64),
    "shots": np.dtype(np.int64),
    "shape_shots": np.dtype(np.float32),
}

#: Optional arrays of a sequence of several shots (fit file and packed group; absent: one shot of all frames).
SHOT_ARRAYS: dict[str, tuple[tuple[int | str, ...], str]] = {
    "shots": (("K", 2), "i"),
    "shape_shots": (("K", "S"), "f"),
}

#: Arrays that may hold NaN where ``detected`` is False (the detections themselves).
NAN_WHERE_UNDETECTED = ("landmarks",)

#: Root attributes every packed file has.
DATASET_ROOT_ATTRS = (
    "format", "format_version", "split", "annotator", "n_sequences", "flame_sha256", "encoder_ids",
    "config_hashes", "neuface_version", "created", "n_shape", "n_exp",
)
#: Attributes every ``/sequences/<id>`` group has (``warnings``, the partial-input codes, is written too; files
#: packed before it existed lack it: read it with :func:`sequence_warnings`).
SEQUENCE_ATTRS = ("views", "fps", "n_frames")

#: Columns of the filter manifest, in order (``nme``: bounding-box normalised, judged; ``nme_eye``: eye-corner
#: normalised, recorded only; ``warnings``: ``;``-joined partial-input codes, :mod:`neuface.input_warnings`;
#: ``n_shots``: shots of the sequence, :mod:`neuface.shots`; ``shape_norm``: the largest ‖β‖₂ of its shots).
MANIFEST_COLUMNS = (
    "sequence", "split", "annotator", "status", "reasons", "warnings", "n_frames", "n_views", "n_shots",
    "shape_norm", "detected_frac", "nme", "nme_eye", "path",
)
ACCEPTED = "accepted"
REJECTED = "rejected"


def _kind(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "b"
    if np.issubdtype(dtype, np.floating):
        return "f"
    if np.issubdtype(dtype, np.integer):
        return "i"
    return dtype.kind


def check_group(group: Any, schema: dict[str, tuple[tuple[int | str, ...], str]],
                sizes: dict[str, int] | None = None) -> tuple[list[str], dict[str, int]]:
    """Check that ``group`` (an h5py group) holds every array of ``schema`` with consistent shapes.

    Only metadata is read. Returns ``(problems, sizes)``; ``problems`` is empty when the group conforms and
    ``sizes`` maps the symbolic sizes (``F``, ``V``, ``S``, ``E``) to what was found.
    """
    sizes = {} if sizes is None else sizes
    problems: list[str] = []
    for name, (spec, kind) in schema.items():
        if name not in group:
            problems.append(f"missing dataset {name!r}")
            continue
        obj = group[name]
        shape = getattr(obj, "shape", None)
        if shape is None:
            problems.append(f"{name!r} is not a dataset")
            continue
        if _kind(obj.dtype) != kind:
            problems.append(f"{name!r} has dtype {obj.dtype}, expected kind {kind!r}")
        if len(shape) != len(spec):
            problems.append(f"{name!r} has shape {shape}, expected ({', '.join(map(str, spec))})")
            continue
        for dim, (want, got) in enumerate(zip(spec, shape, strict=True)):
            if isinstance(want, int):
                if got != want:
                    problems.append(f"{name!r} has shape {shape}; dim {dim} should be {want}")
            elif want in sizes and sizes[want] != got:
                problems.append(f"{name!r} has shape {shape}; dim {dim} ({want}) is {got} but {want}={sizes[want]} "
                                "elsewhere")
            else:
                sizes[want] = got
    return problems, sizes


def attr_str(value: Any) -> str:
    """An HDF5 string attribute as ``str`` (bytes decoded)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        return attr_str(value[()])
    return str(value)


def attr_str_list(value: Any) -> list[str]:
    """A string-list attribute (``neuface.video.store.str_list_attr``) as a list of ``str``."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]


def sequence_warnings(group: Any) -> list[str]:
    """The ``warnings`` attribute of a packed ``/sequences/<id>`` group (partial-input codes, e.g.
    ``truncated_decode:front:75/270``); ``[]`` when there are none or the file predates the attribute."""
    if "warnings" not in group.attrs:
        return []
    return [w for w in attr_str_list(group.attrs["warnings"]) if w]


def check_shot_arrays(group: Any, sizes: dict[str, int]) -> list[str]:
    """Problems of the optional ``shots`` / ``shape_shots`` of a fit or packed group (``sizes`` from
    :func:`check_group`: ``F`` frames, ``S`` identity coefficients); none when both are absent."""
    present = [name for name in SHOT_ARRAYS if name in group]
    if not present:
        return []
    if len(present) != len(SHOT_ARRAYS):
        return [f"{present[0]!r} without {[n for n in SHOT_ARRAYS if n not in present][0]!r}"]
    problems, _ = check_group(group, SHOT_ARRAYS, {"S": sizes["S"]} if "S" in sizes else {})
    if problems:
        return problems
    from neuface.errors import NeufaceError
    from neuface.shots import check_shots

    try:
        check_shots(group["shots"][()], sizes.get("F", -1))
    except NeufaceError as exc:
        return [f"'shots': {exc}"]
    return []


def sequence_shots(group: Any) -> np.ndarray:
    """Shot bounds (S, 2) int64 ``[start, stop)`` of a fit file or packed ``/sequences/<id>`` group: its
    ``shots``, or one shot of all ``expression`` frames when there is none (:mod:`neuface.shots`)."""
    if "shots" in group:
        return np.asarray(group["shots"][()], dtype=np.int64)
    return np.array([[0, int(group["expression"].shape[0])]], dtype=np.int64)


def str_list(values: list[str]) -> np.ndarray:
    """A list of ``str`` as a variable-length UTF-8 string array attribute."""
    import h5py

    return np.array(list(values), dtype=h5py.string_dtype())


__all__ = [
    "ACCEPTED",
    "DATASET_ARRAYS",
    "DATASET_DTYPES",
    "DATASET_FORMAT",
    "DATASET_FORMAT_VERSION",
    "DATASET_ROOT_ATTRS",
    "FIT_ARRAYS",
    "FIT_FORMAT",
    "MANIFEST_COLUMNS",
    "NAN_WHERE_UNDETECTED",
    "REJECTED",
    "SEQUENCE_ARRAYS",
    "SEQUENCE_ATTRS",
    "SHOT_ARRAYS",
    "attr_str",
    "attr_str_list",
    "check_group",
    "check_shot_arrays",
    "sequence_shots",
    "sequence_warnings",
    "str_list",
]
