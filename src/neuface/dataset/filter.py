"""Accept or reject each sequence's fit, with every reason, into a manifest TSV (paper appendix A).

The paper discards a sequence when ``||β||₂ > 1.0`` (identity far from the prior) or when the landmark detector
failed to capture the face. We apply those two rules and a few more that a pipeline needs:

* ``shape norm X > max`` — ``||β||₂`` above ``max_shape_norm`` (paper: 1.0); a sequence of several shots
  (:mod:`neuface.shots`) is judged by its largest ``||β||₂`` (every shot's identity must pass; the message names
  the shot);
* ``missing detections X > max`` — fraction of (frame, view) pairs with no detected face above
  ``max_missing_frac``;
* ``NME X% > max`` — mean normalised error of the fit's projected 68 landmarks against the detections, on
  detected frames, normalised by ``√(w·h)`` of the detections' landmark bounding box, in percent (the headline
  NME, :func:`neuface.metrics.nme` with ``norm="bbox"``; pose-robust, unlike the outer-eye-corner distance,
  which shrinks as the head turns). The eye-corner NME is recorded too (column ``nme_eye``) but not judged;
* ``non-finite values in ...`` — NaN/inf anywhere they are not allowed (``landmarks`` may be NaN where
  ``detected`` is False);
* ``too few frames``, ``malformed fit: ...`` (including inconsistent ``shots`` / ``shape_shots``),
  ``unreadable fit file: ...``, ``annotator mismatch``;
* ``upstream fit: <reason>`` — the fit stage itself recorded a failure;
* ``no fit output`` — a sheet sequence without a fit file;
* ``partial input: <codes>`` — only with ``partial_inputs='reject'``: the fit was made from less than the whole
  input (coded warnings of :mod:`neuface.input_warnings`: ``truncated_decode``, ``trimmed_views``,
  ``missing_views``, ``dropped_view``). With ``'flag'`` (the default) such a sequence is judged like any other
  and its codes are only recorded.

Every line's ``warnings`` column holds the partial-input codes the fit file's status carries (``;``-joined,
empty for none), whatever the decision, so a partial input never passes unseen; ``n_shots`` the number of shots
(1 for an uncut sequence).

Every sheet sequence gets exactly one manifest line (and so does a fit file whose sequence is not in the
sheet: ``not in sample sheet``); nothing is dropped silently. The thresholds are written in the manifest's
header comment (``# thresholds: {json}``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from neuface import __version__
from neuface.dataset.schema import (
    ACCEPTED,
    FIT_ARRAYS,
    FIT_FORMAT,
    MANIFEST_COLUMNS,
    NAN_WHERE_UNDETECTED,
    REJECTED,
    attr_str,
    attr_str_list,
    check_group,
    check_shot_arrays,
    sequence_shots,
)
from neuface.errors import NeufaceError, ShapeError
from neuface.input_warnings import input_warnings
from neuface.io_utils import atomic_path
from neuface.status import read_status_attrs

log = logging.getLogger(__name__)

#: v2: ``nme`` is bounding-box normalised and ``nme_eye`` (eye-corner normalised, v1's ``nme``) was added.
#: v3: the ``warnings`` column (partial-input codes). v2 manifests are read with empty warnings.
#: v4: the ``n_shots`` column (shots of the sequence). v2 / v3 manifests are read with ``n_shots`` 1 (no fit was
#: cut into shots before v4).
MANIFEST_MAGIC = "# neuface.filter manifest v4"
_MANIFEST_V2 = "# neuface.filter manifest v2"
_MANIFEST_V3 = "# neuface.filter manifest v3"
#: What to do with a sequence made from a partial input: accept it with its warnings recorded, or reject it.
PARTIAL_INPUT_POLICIES = ("flag", "reject")


@dataclass(frozen=True)
class FilterThresholds:
    """Rejection thresholds (a sequence is rejected when a value is strictly above its maximum).

    ``max_nme`` (percent) applies to the bounding-box NME (``√(w·h)`` of the detections' landmark box), averaged
    over the detected (frame, view) pairs. The default 8 % rejects gross failures only. Measured on the
    synthetic kit head (68 projected landmarks, docs/metrics.md "Filter threshold"): the bbox NME is 0.59× the
    eye-corner NME for frontal faces (0.44× at 45° yaw, 0.33× at 60°), so the former eye-corner default of
    10 % meant ≈ 5.9 % bbox frontal but ≈ 3.3 % at 60° yaw (turned heads were judged ~1.8× more strictly).
    Fits with landmark jitter of 2 % of the box (2.5 %), a neutral expression (1.0–1.2 %), a 20° yaw error
    (5.2–5.4 %) or a 10 % scale error (3.4–3.6 %) stay below 8 %; a 30° yaw error (7.7–8.1 %) is at the limit
    and a shift by 10 % of the box (10 %) is rejected, frontal or at 45° yaw alike.
    """

    max_shape_norm: float = 1.0
    max_missing_frac: float = 0.2
    max_nme: float = 8.0
    min_frames: int = 1
    #: ``flag``: a partial input (truncated video, trimmed / missing / dropped views) is recorded in the
    #: ``warnings`` column only; ``reject``: it is also a rejection reason.
    partial_inputs: str = "flag"

    def __post_init__(self) -> None:
        if self.partial_inputs not in PARTIAL_INPUT_POLICIES:
            raise NeufaceError(f"partial_inputs must be one of {', '.join(PARTIAL_INPUT_POLICIES)}, "
                               f"got {self.partial_inputs!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class FilterRecord:
    """One manifest line."""

    sequence: str
    split: str = ""
    annotator: str = ""
    status: str = REJECTED
    reasons: list[str] = field(default_factory=list)
    n_frames: int = 0
    n_views: int = 0
    n_shots: int = 0
    shape_norm: float = math.nan
    detected_frac: float = math.nan
    nme: float = math.nan
    nme_eye: float = math.nan
    path: str = ""
    warnings: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        def num(x: float) -> str:
            return "nan" if not math.isfinite(x) else f"{x:.6g}"

        reasons = ";".join(" ".join(r.replace(";", ",").split()) for r in self.reasons)
        warnings = ";".join(" ".join(w.replace(";", ",").split()) for w in self.warnings)
        return [self.sequence, self.split, self.annotator, self.status, reasons, warnings, str(self.n_frames),
                str(self.n_views), str(self.n_shots), num(self.shape_norm), num(self.detected_frac),
                num(self.nme), num(self.nme_eye), self.path]


def evaluate_fit(path: str | os.PathLike, thresholds: FilterThresholds, annotator: str | None = None,
                 sequence: str | None = None) -> FilterRecord:
    """Read one fit file and decide; never raises for a bad file (the problem becomes a reason)."""
    path = Path(path)
    rec = FilterRecord(sequence=sequence or path.stem, annotator=annotator or "", path=str(path))
    try:
        with h5py.File(path, "r") as f:
            _evaluate_open(f, rec, thresholds, annotator)
    except (OSError, KeyError, ValueError, TypeError, NeufaceError) as exc:
        rec.reasons.append(f"unreadable fit file: {type(exc).__name__}: {exc}")
    rec.status = REJECTED if rec.reasons else ACCEPTED
    return rec


def _evaluate_open(f: h5py.File, rec: FilterRecord, th: FilterThresholds, annotator: str | None) -> None:
    status = read_status_attrs(f.attrs)
    rec.sequence = status.sequence or rec.sequence
    rec.warnings = input_warnings(status.warnings)
    if rec.warnings and th.partial_inputs == "reject":
        rec.reasons.append("partial input: " + ", ".join(rec.warnings))
    fmt = attr_str(f.attrs.get("format", ""))
    if fmt != FIT_FORMAT:
        rec.reasons.append(f"malformed fit: format is {fmt!r}, expected {FIT_FORMAT!r}")
        return
    file_annotator = attr_str(f.attrs.get("annotator", ""))
    if annotator and file_annotator and file_annotator != annotator:
        rec.reasons.append(f"annotator mismatch: file says {file_annotator!r}")
    rec.annotator = annotator or file_annotator
    views = attr_str_list(f.attrs["views"]) if "views" in f.attrs else []
    rec.n_views = len(views)
    rec.n_frames = int(f.attrs.get("n_frames", 0))
    if not status.ok:
        rec.reasons.append(f"upstream fit: {status.reason}")
        return
    problems, sizes = check_group(f, FIT_ARRAYS)
    if not problems and views and sizes["V"] != len(views):
        problems.append(f"{sizes['V']} views in the arrays but {len(views)} in attribute 'views'")
    if not problems:
        problems = check_shot_arrays(f, sizes)
    if problems:
        rec.reasons.append("malformed fit: " + ", ".join(problems))
        return
    rec.n_frames, rec.n_views = sizes["F"], sizes["V"]
    rec.n_shots = len(sequence_shots(f))
    if rec.n_frames < th.min_frames:
        rec.reasons.append(f"too few frames: {rec.n_frames} < {th.min_frames}")
    arrays = {name: f[name][()] for name in FIT_ARRAYS}
    if "shape_shots" in f:
        arrays["shape_shots"] = f["shape_shots"][()]
    _judge_arrays(arrays, rec, th)


def _judge_arrays(a: dict[str, np.ndarray], rec: FilterRecord, th: FilterThresholds) -> None:
    detected = a["detected"].astype(bool)
    bad = []
    for name, arr in a.items():
        if arr.dtype.kind != "f":
            continue
        finite = np.isfinite(arr)
        if name in NAN_WHERE_UNDETECTED:
            finite = finite | ~detected.reshape(detected.shape + (1,) * (arr.ndim - 2))
        if not finite.all():
            bad.append(name)
    if bad:
        rec.reasons.append("non-finite values in " + ", ".join(bad))
    if "shape_shots" in a:  # every shot's identity is judged; the record keeps the largest norm
        norms = np.linalg.norm(a["shape_shots"].astype(np.float64), axis=1)
        worst = int(np.argmax(np.nan_to_num(norms, nan=np.inf)))
        rec.shape_norm = float(norms[worst])
        where = f" (shot {worst} of {len(norms)})"
    else:
        rec.shape_norm = float(np.linalg.norm(a["shape"].astype(np.float64)))
        where = ""
    if math.isfinite(rec.shape_norm) and rec.shape_norm > th.max_shape_norm:
        rec.reasons.append(f"shape norm {rec.shape_norm:.3g} > {th.max_shape_norm:g}{where}")
    rec.detected_frac = float(detected.mean()) if detected.size else 0.0
    missing = 1.0 - rec.detected_frac
    if missing > th.max_missing_frac:
        rec.reasons.append(f"missing detections {missing:.3g} > {th.max_missing_frac:g}")
    import torch  # lazy: `neuface pack` / `neuface filter` start faster without torch when not needed

    from neuface.metrics.core import nme

    pred = torch.from_numpy(a["landmarks_pred"].astype(np.float64)).reshape(-1, 68, 2)
    target = torch.from_numpy(a["landmarks"].astype(np.float64)).reshape(-1, 68, 2)
    valid = torch.from_numpy(detected.reshape(-1))
    rec.nme = float(nme(pred, target, valid, norm="bbox"))
    rec.nme_eye = float(nme(pred, target, valid, norm="eye"))
    if math.isfinite(rec.nme) and rec.nme > th.max_nme:
        rec.reasons.append(f"NME {rec.nme:.3g}% > {th.max_nme:g}%")
    elif not math.isfinite(rec.nme) and detected.any():
        rec.reasons.append("NME undefined on every detected frame")


def filter_fits(fit_paths: Iterable[str | os.PathLike], sheet_sequences: dict[str, str], annotator: str,
                thresholds: FilterThresholds | None = None) -> list[FilterRecord]:
    """Judge every fit; one record per sheet sequence (plus fits not in the sheet), sorted by sequence.

    Args:
        fit_paths: fit files (one per sequence).
        sheet_sequences: ``{sequence: split}`` from the sample sheet.
        annotator: expected annotator name.
    """
    th = thresholds or FilterThresholds()
    records: dict[str, FilterRecord] = {}
    for path in fit_paths:
        rec = evaluate_fit(path, th, annotator=annotator)
        if rec.sequence in records:
            log.warning("sequence %s has two fit files: %s and %s", rec.sequence, records[rec.sequence].path,
                        rec.path)
            records[rec.sequence].reasons.append(f"duplicate fit (also {rec.path})")
            records[rec.sequence].status = REJECTED
            continue
        if rec.sequence in sheet_sequences:
            rec.split = sheet_sequences[rec.sequence]
        else:
            rec.reasons.append("not in sample sheet")
            rec.status = REJECTED
        records[rec.sequence] = rec
    for seq, split in sheet_sequences.items():
        if seq not in records:
            records[seq] = FilterRecord(seq, split, annotator, REJECTED, ["no fit output"])
    out = [records[k] for k in sorted(records)]
    n_ok = sum(r.status == ACCEPTED for r in out)
    log.info("filter %s: %d accepted, %d rejected of %d sequences", annotator, n_ok, len(out) - n_ok, len(out))
    return out


def write_manifest(records: list[FilterRecord], path: str | os.PathLike, thresholds: FilterThresholds,
                   annotator: str = "") -> Path:
    """Write the manifest TSV atomically: a header comment (format, thresholds, version), then one line each."""
    path = Path(path)
    with atomic_path(path, suffix=".tsv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(f"{MANIFEST_MAGIC}\n")
        fh.write(f"# annotator: {annotator}\n")
        fh.write(f"# thresholds: {thresholds.to_json()}\n")
        fh.write(f"# neuface_version: {__version__}\n")
        fh.write("\t".join(MANIFEST_COLUMNS) + "\n")
        for rec in records:
            fh.write("\t".join(" ".join(c.split()) for c in rec.row()) + "\n")
    return path


def read_manifest(path: str | os.PathLike) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Read a manifest: ``(rows as dicts of str, header metadata {annotator, thresholds, neuface_version})``."""
    path = Path(path)
    if not path.is_file():
        raise NeufaceError(f"manifest {path} does not exist")
    meta: dict[str, Any] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    v2 = bool(lines) and lines[0] == _MANIFEST_V2
    old = v2 or (bool(lines) and lines[0] == _MANIFEST_V3)
    if lines and lines[0].startswith("# neuface.filter manifest v") and lines[0] != MANIFEST_MAGIC and not old:
        raise NeufaceError(f"{path} is a manifest of another version ({lines[0][2:]!r}, expected "
                           f"{MANIFEST_MAGIC[2:]!r}; v1 had an eye-corner NME): re-run neuface filter")
    if not lines or (lines[0] != MANIFEST_MAGIC and not old):
        raise NeufaceError(f"{path} is not a filter manifest (first line should be {MANIFEST_MAGIC!r})")
    body = []
    for line in lines:
        if line.startswith("# ") and ": " in line and not body:
            key, value = line[2:].split(": ", 1)
            meta[key] = json.loads(value) if key == "thresholds" else value
        elif line.strip() and not line.startswith("#"):
            body.append(line)
    columns = tuple(c for c in MANIFEST_COLUMNS if c != "n_shots" or not old)
    columns = tuple(c for c in columns if c != "warnings" or not v2)
    if not body or tuple(body[0].split("\t")) != columns:
        raise NeufaceError(f"manifest {path}: the column header should be {' '.join(columns)!r} (tabs)")
    rows = []
    for n, line in enumerate(body[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(columns):
            raise ShapeError(f"manifest {path}: row {n} has {len(cells)} fields, expected {len(columns)}")
        row = dict(zip(columns, cells, strict=True))
        # v2: no partial-input record (""); v2 / v3: every fit was one shot
        rows.append({c: row.get(c, "1" if c == "n_shots" else "") for c in MANIFEST_COLUMNS})
    return rows, meta


__all__ = [
    "PARTIAL_INPUT_POLICIES",
    "FilterRecord",
    "FilterThresholds",
    "evaluate_fit",
    "filter_fits",
    "read_manifest",
    "write_manifest",
]
