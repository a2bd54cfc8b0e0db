"""Per-sequence, per-stage status records: how a stage went for one sequence, and why it failed.

Bad input must never stop the workflow: a stage that cannot process a sequence still writes its output file,
marked ``status='failed'`` with a one-line ``reason``, and exits 0. Downstream stages read the upstream status
first and propagate the failure without doing any work (:meth:`StageStatus.propagate`), so the filter stage
sees every sequence's fate in one place.

A status lives in two places that hold the same fields:

* the root attributes of the stage's HDF5 output (:func:`write_status_attrs` / :func:`read_status_attrs`);
* optionally a small JSON file (:func:`write_status` / :func:`read_status`), convenient for reports.

:func:`read_status` accepts either kind of file.

Fields: ``sequence``, ``stage`` (e.g. ``"frames"``), ``status`` (``"ok"`` or ``"failed"``), ``reason`` (empty
when ok), ``details`` (JSON-able dict: counts, trims, dropped views…), ``warnings`` (list of one-line notes
about the result that downstream filtering may care about; each stage carries its upstream stage's warnings
into its own status, a failure propagated included, see :func:`carry_warnings`; the coded partial-input
warnings are described in :mod:`neuface.input_warnings`) and ``version`` (neuface version).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from neuface import __version__
from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path

OK = "ok"
FAILED = "failed"
STATUSES = (OK, FAILED)


@dataclass(frozen=True)
class StageStatus:
    """Outcome of one stage for one sequence."""

    sequence: str
    stage: str
    status: str = OK
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    version: str = __version__

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise NeufaceError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status == FAILED and not self.reason:
            raise NeufaceError("a failed status needs a reason")
        object.__setattr__(self, "warnings", tuple(self.warnings))

    @property
    def ok(self) -> bool:
        return self.status == OK

    @classmethod
    def failed(cls, sequence: str, stage: str, reason: str, **details: Any) -> StageStatus:
        """A failed status with ``reason`` (one line) and optional details."""
        return cls(sequence, stage, FAILED, " ".join(str(reason).split()), dict(details))

    def propagate(self, stage: str) -> StageStatus:
        """Status for downstream ``stage`` when this (upstream) status failed: ``failed (upstream ...)``; the
        upstream warnings are carried."""
        if self.ok:
            raise NeufaceError("only a failed status propagates")
        reason = self.reason
        if not reason.startswith("upstream "):
            reason = f"upstream {self.stage}: {reason}"
        return StageStatus(self.sequence, stage, FAILED, reason, {"upstream_stage": self.stage},
                           warnings=self.warnings)

    def with_warnings(self, *warnings: Iterable[str]) -> StageStatus:
        """A copy whose warnings are :func:`carry_warnings` of ``warnings`` (e.g. the upstream ones) and its own."""
        return replace(self, warnings=carry_warnings(*warnings, self.warnings))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageStatus:
        try:
            return cls(
                sequence=str(d["sequence"]),
                stage=str(d["stage"]),
                status=str(d["status"]),
                reason=str(d.get("reason", "")),
                details=dict(d.get("details") or {}),
                warnings=tuple(d.get("warnings") or ()),
                version=str(d.get("version", "unknown")),
            )
        except KeyError as exc:
            raise NeufaceError(f"status record lacks field {exc.args[0]!r}") from None

    def summary(self) -> str:
        """One log line."""
        text = f"{self.stage} {self.sequence}: {self.status}"
        if self.reason:
            text += f" ({self.reason})"
        if self.warnings:
            text += f"; {len(self.warnings)} warning(s): " + "; ".join(self.warnings)
        return text


def carry_warnings(*groups: Iterable[str]) -> tuple[str, ...]:
    """The warnings of every group (upstream stages first, then the stage's own), each once, in order.

    Every stage calls this with its upstream status's warnings, so the notes of all stages (in particular the
    coded partial-input warnings of :mod:`neuface.input_warnings`) reach the fit file and the filter.
    """
    seen: dict[str, None] = {}
    for group in groups:
        for warning in group:
            seen.setdefault(str(warning), None)
    return tuple(seen)


def write_status_attrs(attrs: Any, status: StageStatus) -> None:
    """Write ``status`` into HDF5 root attributes (an ``h5py`` ``AttributeManager``)."""
    attrs["sequence"] = status.sequence
    attrs["stage"] = status.stage
    attrs["status"] = status.status
    attrs["reason"] = status.reason
    attrs["details"] = json.dumps(status.details, sort_keys=True, default=_json_default)
    attrs["warnings"] = json.dumps(list(status.warnings))
    attrs["neuface_version"] = status.version


def read_status_attrs(attrs: Any) -> StageStatus:
    """Read a status back from HDF5 attributes written by :func:`write_status_attrs`."""
    missing = [k for k in ("sequence", "stage", "status") if k not in attrs]
    if missing:
        raise NeufaceError(f"HDF5 file has no status attributes ({', '.join(missing)} missing)")
    return StageStatus(
        sequence=_str(attrs["sequence"]),
        stage=_str(attrs["stage"]),
        status=_str(attrs["status"]),
        reason=_str(attrs.get("reason", "")),
        details=json.loads(_str(attrs.get("details", "{}"))),
        warnings=tuple(json.loads(_str(attrs.get("warnings", "[]")))),
        version=_str(attrs.get("neuface_version", "unknown")),
    )


def write_status(status: StageStatus, path: str | os.PathLike) -> None:
    """Write ``status`` as a JSON file (atomically)."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(status.to_dict(), indent=2, sort_keys=True, default=_json_default) + "\n")


def read_status(path: str | os.PathLike) -> StageStatus:
    """Read a status from a JSON record or from the root attributes of a stage's HDF5 output."""
    path = Path(path)
    if not path.exists():
        raise NeufaceError(f"status file {path} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        import h5py

        with h5py.File(path, "r") as f:
            return read_status_attrs(f.attrs)
    try:
        return StageStatus.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NeufaceError(f"{path} is neither a status JSON record nor an HDF5 file: {exc}") from None


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-able."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


__all__ = [
    "FAILED",
    "OK",
    "STATUSES",
    "StageStatus",
    "carry_warnings",
    "read_status",
    "read_status_attrs",
    "write_status",
    "write_status_attrs",
]
