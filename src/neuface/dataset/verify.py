"""``neuface h5 verify``: check a packed dataset (or a fit file) against its schema, reading every byte.

Checks: the file opens (a truncated or corrupted HDF5 file makes h5py raise ``OSError``: reported, not raised),
root attributes, ``n_sequences`` equals the number of groups, every sequence's arrays exist with consistent
shapes and dtypes (a cut sequence's ``shots`` cover its frames and ``shape_shots`` has one β per shot),
attributes agree with shapes (``n_frames``, ``views``, ``n_shots``), every value is finite (``landmarks`` may be
NaN where ``detected`` is False), and all sequences share ``n_shape`` / ``n_exp``. Data are read one
sequence at a time, so memory stays bounded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from neuface.dataset.schema import (
    DATASET_ARRAYS,
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    DATASET_ROOT_ATTRS,
    FIT_ARRAYS,
    FIT_FORMAT,
    NAN_WHERE_UNDETECTED,
    SEQUENCE_ATTRS,
    SHOT_ARRAYS,
    attr_str,
    attr_str_list,
    check_group,
    check_shot_arrays,
    sequence_shots,
)

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """What :func:`verify_file` found; ``ok`` when ``problems`` is empty."""

    path: str
    format: str = ""
    n_sequences: int = 0
    n_frames: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.path}: ok ({self.format}, {self.n_sequences} sequences, {self.n_frames} frames)"
        shown = self.problems[:20]
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        return f"{self.path}: {len(self.problems)} problem(s):\n  " + "\n  ".join(shown) + more


def _check_values(group: h5py.Group, names: tuple[str, ...] | list[str], where: str) -> list[str]:
    problems = []
    detected = group["detected"][()].astype(bool)
    for name in names:
        arr = group[name][()]
        if arr.dtype.kind != "f":
            continue
        finite = np.isfinite(arr)
        if name in NAN_WHERE_UNDETECTED:
            finite |= ~detected.reshape(detected.shape + (1,) * (arr.ndim - 2))
        if not finite.all():
            problems.append(f"{where}/{name}: {int((~finite).sum())} non-finite value(s)")
    return problems


def _verify_sequence(name: str, g: h5py.Group, report: VerifyReport, dims: dict[str, int]) -> None:
    where = f"/sequences/{name}"
    problems, sizes = check_group(g, DATASET_ARRAYS)
    if not problems:
        problems = check_shot_arrays(g, sizes)
    report.problems += [f"{where}: {p}" for p in problems]
    missing = [a for a in SEQUENCE_ATTRS if a not in g.attrs]
    if missing:
        report.problems.append(f"{where}: missing attribute(s) {', '.join(missing)}")
    if problems:
        return
    if "n_frames" in g.attrs and int(g.attrs["n_frames"]) != sizes["F"]:
        report.problems.append(f"{where}: attribute n_frames={int(g.attrs['n_frames'])} but arrays have {sizes['F']}")
    n_views = len(attr_str_list(g.attrs["views"])) if "views" in g.attrs else sizes["V"]
    if n_views != sizes["V"]:
        report.problems.append(f"{where}: {n_views} views in attrs, {sizes['V']} in arrays")
    for key in ("S", "E"):
        label = {"S": "n_shape", "E": "n_exp"}[key]
        if label in dims and dims[label] != sizes[key]:
            report.problems.append(f"{where}: {label}={sizes[key]} but the file says {dims[label]}")
    if "n_shots" in g.attrs and int(g.attrs["n_shots"]) != len(sequence_shots(g)):
        report.problems.append(f"{where}: attribute n_shots={int(g.attrs['n_shots'])} but {len(sequence_shots(g))} "
                               "shot(s) stored")
    fi = g["frame_indices"][()]
    if fi.size > 1 and not (np.diff(fi) > 0).all():
        report.problems.append(f"{where}/frame_indices: not strictly increasing")
    report.problems += _check_values(g, list(DATASET_ARRAYS) + [k for k in SHOT_ARRAYS if k in g], where)
    report.n_frames += sizes["F"]


def _verify_dataset(f: h5py.File, report: VerifyReport) -> None:
    missing = [a for a in DATASET_ROOT_ATTRS if a not in f.attrs]
    if missing:
        report.problems.append(f"missing root attribute(s): {', '.join(missing)}")
    version = int(f.attrs.get("format_version", -1))
    if version != DATASET_FORMAT_VERSION:
        report.problems.append(f"format_version {version}, this neuface reads {DATASET_FORMAT_VERSION}")
    if "sequences" not in f:
        report.problems.append("missing group /sequences")
        return
    names = list(f["sequences"].keys())
    report.n_sequences = len(names)
    if "n_sequences" in f.attrs and int(f.attrs["n_sequences"]) != len(names):
        report.problems.append(f"n_sequences={int(f.attrs['n_sequences'])} but /sequences has {len(names)} groups")
    dims = {k: int(f.attrs[k]) for k in ("n_shape", "n_exp") if k in f.attrs}
    for name in names:
        try:
            _verify_sequence(name, f["sequences"][name], report, dims)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            report.problems.append(f"/sequences/{name}: unreadable data ({type(exc).__name__}: {exc})")


def _verify_fit(f: h5py.File, report: VerifyReport) -> None:
    from neuface.status import read_status_attrs

    status = read_status_attrs(f.attrs)
    if not status.ok:
        report.n_sequences = 0
        return
    problems, sizes = check_group(f, FIT_ARRAYS)
    if not problems:
        problems = check_shot_arrays(f, sizes)
    report.problems += problems
    if not problems:
        report.n_sequences, report.n_frames = 1, sizes["F"]
        report.problems += _check_values(f, list(FIT_ARRAYS) + [k for k in SHOT_ARRAYS if k in f], "")


def verify_file(path: str | os.PathLike) -> VerifyReport:
    """Verify a ``neuface.dataset`` (or ``neuface.fit``) file; never raises for a bad file."""
    path = Path(path)
    report = VerifyReport(str(path))
    if not path.is_file():
        report.problems.append("file does not exist")
        return report
    try:
        with h5py.File(path, "r") as f:
            report.format = attr_str(f.attrs.get("format", ""))
            if report.format == DATASET_FORMAT:
                _verify_dataset(f, report)
            elif report.format == FIT_FORMAT:
                _verify_fit(f, report)
            else:
                report.problems.append(f"unknown format attribute {report.format!r} (expected {DATASET_FORMAT!r})")
    except OSError as exc:
        report.problems.append(f"cannot read the file (truncated or corrupted HDF5?): {exc}")
    except Exception as exc:  # noqa: BLE001 - any h5py/numpy failure on a damaged file is a finding
        report.problems.append(f"cannot read the file: {type(exc).__name__}: {exc}")
    return report


__all__ = ["VerifyReport", "verify_file"]
