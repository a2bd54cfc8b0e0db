"""The ``frames`` stage for one sequence: decode every view into one HDF5 container, never crash on bad input.

Bad input (missing, unreadable, corrupt, truncated, zero-frame video) is recorded, not raised: the output file
is always written, with ``status='failed'`` and a one-line reason when nothing usable remains. In a multi-view
sequence a failing view is dropped and recorded (``on_view_error='drop'``, the default) or fails the whole
sequence (``'fail'``). Views of different lengths are trimmed to the shortest and the trim is recorded.

A sequence that is processed from less than its whole input stays ``ok`` but carries coded partial-input
warnings (:mod:`neuface.input_warnings`) that later stages carry to the filter and the packed dataset:
``truncated_decode:<view>:<decoded>/<expected>`` (a video that decodes only partly — a decoder error mid-stream,
or fewer frames than the header's count / duration × fps; its decoded frames are kept),
``trimmed_views:<view>:<had>-><kept>``, ``missing_views:<view>`` (peers in the sheet have it) and
``dropped_view:<view>:<reason>``.
"""

from __future__ import annotations

import logging
import math
import os

import av
import h5py
import pandas as pd

from neuface.errors import NeufaceError
from neuface.input_warnings import dropped_view, missing_view, trimmed_view, truncated_decode
from neuface.io_utils import atomic_path
from neuface.status import StageStatus
from neuface.video.decode import VideoDecodeError, VideoReader
from neuface.video.store import COMPRESSION, ViewWriter, write_root_attrs

log = logging.getLogger(__name__)

STAGE = "frames"
VIEW_ERROR_POLICIES = ("drop", "fail")


def _decode_view(f: h5py.File, view: str, path: str, fps: float | None, max_frames: int | None,
                 max_size: int | None, compression: str | None) -> tuple[int, dict, str, int]:
    """Decode one view into ``f``; returns (frame count, view attrs, truncation message or '', frames the
    container announces or 0)."""
    with VideoReader(path, fps=fps, max_frames=max_frames, max_size=max_size) as reader:
        writer = ViewWriter(f, view, reader.height, reader.width, compression)
        for t, rgb in reader:
            writer.append(t, rgb)
        writer.flush()
        info = reader.info
        attrs = {
            "source": str(path),
            "fps": float(reader.fps) if reader.fps else float("nan"),
            "width": reader.width,
            "height": reader.height,
            "n_frames_decoded": reader.n_decoded,
            "n_frames_expected": reader.n_expected,
            "truncated": bool(reader.truncated),
            "source_width": info.width,
            "source_height": info.height,
            "source_fps": info.fps if info.fps else float("nan"),
            "codec": info.codec,
        }
        for key, value in attrs.items():
            writer.group.attrs[key] = value
        return writer.count, attrs, reader.error if reader.truncated else "", reader.n_expected


def extract_sequence(
    rows: pd.DataFrame,
    out: str | os.PathLike,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    max_size: int | None = None,
    expected_views: list[str] | None = None,
    on_view_error: str = "drop",
    compression: str | None = COMPRESSION,
) -> StageStatus:
    """Decode the views of one sequence (its sample-sheet ``rows``) into the frames file ``out``.

    Args:
        rows: sheet rows of exactly one sequence (columns ``sequence, view, path``).
        out: output ``.h5`` path (written atomically, always — also on failure).
        fps, max_frames, max_size: see :class:`neuface.video.decode.VideoReader`.
        expected_views: views peers of this sequence have (e.g. from :func:`neuface.sheets.expected_views`);
            absent ones are recorded as ``missing_views``.
        on_view_error: ``'drop'`` a failing view of a multi-view sequence, or ``'fail'`` the sequence.
        compression: ``'lzf'`` (default), ``'gzip'`` (level 1) or None.

    Returns:
        The :class:`StageStatus` also stored in the file's attributes.
    """
    if on_view_error not in VIEW_ERROR_POLICIES:
        raise NeufaceError(f"on_view_error must be one of {VIEW_ERROR_POLICIES}, got {on_view_error!r}")
    sequences = sorted(set(rows["sequence"]))
    if len(sequences) != 1:
        raise NeufaceError(f"extract_sequence needs the rows of one sequence, got {len(sequences)}")
    sequence = sequences[0]
    rows = rows.sort_values("view")
    warnings: list[str] = []
    missing = sorted(set(expected_views or ()) - set(rows["view"]))
    if missing:
        log.warning("%s: views missing from the sheet (its peers have them): %s", sequence, ", ".join(missing))
        warnings += [missing_view(v).code for v in missing]

    with atomic_path(out, suffix=".h5") as tmp:
        status = _decode_all(tmp, rows, sequence, warnings, missing, fps, max_frames, max_size, on_view_error,
                             compression)
        if not status.ok:  # start over: no half-written views (and no space they used) in a failed file
            with h5py.File(tmp, "w") as f:
                write_root_attrs(f, status, [], 0, None, {})

    if status.ok:
        log.log(logging.WARNING if status.warnings else logging.INFO, "%s", status.summary())
    else:
        log.warning("%s", status.summary())
    return status


def _without_dirs(message: str, path: os.PathLike | str) -> str:
    """``message`` with the video's full path cut to its file name: the warning code (cut to a fixed length for
    the manifest) keeps the decoder's reason whatever the directory depth; the details keep the full message."""
    return message.replace(str(path), os.path.basename(str(path)))


def _decode_all(tmp: os.PathLike, rows: pd.DataFrame, sequence: str, warnings: list[str], missing: list[str],
                fps: float | None, max_frames: int | None, max_size: int | None, on_view_error: str,
                compression: str | None) -> StageStatus:
    with h5py.File(tmp, "w") as f:
        counts: dict[str, int] = {}
        view_fps: dict[str, float] = {}
        dropped: dict[str, str] = {}
        truncated: dict[str, str] = {}
        paths = dict(zip(rows["view"], rows["path"], strict=True))
        for view, path in paths.items():
            try:
                n, attrs, trunc, n_expected = _decode_view(f, view, path, fps, max_frames, max_size, compression)
            except (VideoDecodeError, av.error.FFmpegError) as exc:
                dropped[view] = " ".join(str(exc).split())
                _discard_view(f, view)
                continue
            if n == 0:
                dropped[view] = f"no frames decoded from {path}" + (f" ({trunc})" if trunc else "")
                _discard_view(f, view)
                continue
            counts[view], view_fps[view] = n, attrs["fps"]
            if trunc:
                truncated[view] = trunc
                log.warning("%s: view %s: decoding stopped early after %d frame(s): %s", sequence, view,
                            attrs["n_frames_decoded"], trunc)
                warnings.append(truncated_decode(view, attrs["n_frames_decoded"], n_expected).code)

        views = sorted(counts)
        details: dict = {"views": views, "n_views_in_sheet": len(rows), "missing_views": missing,
                         "dropped_views": dropped, "truncated_views": truncated,
                         "n_frames_per_view": dict(counts)}
        reason = _failure_reason(rows, dropped, views, on_view_error)
        n_frames, trimmed = 0, {}
        if reason is None:
            for v, msg in dropped.items():
                log.warning("%s: view %s dropped: %s", sequence, v, msg)
                warnings.append(dropped_view(v, _without_dirs(msg, paths[v])).code)
            n_frames = min(counts.values())
            trimmed = {v: c for v, c in counts.items() if c != n_frames}
            if trimmed:
                for v in trimmed:
                    f[f"views/{v}"]["frames"].resize(n_frames, axis=0)
                    f[f"views/{v}"]["timestamps"].resize(n_frames, axis=0)
                log.warning("%s: views trimmed to the common length %d: %s", sequence, n_frames,
                            ", ".join(f"{v} had {c}" for v, c in sorted(trimmed.items())))
                warnings += [trimmed_view(v, c, n_frames).code for v, c in sorted(trimmed.items())]
            rates = sorted({round(r, 3) for r in view_fps.values() if not math.isnan(r)})
            if len(rates) > 1:
                warnings.append(f"views have different frame rates: {rates}")
            details.update(n_frames=n_frames, trimmed=trimmed)
            status = StageStatus(sequence, STAGE, details=details, warnings=tuple(warnings))
            out_fps = next(iter(view_fps.values())) if len(set(view_fps.values())) == 1 else None
            write_root_attrs(f, status, views, n_frames, out_fps, trimmed)
            return status
    return StageStatus.failed(sequence, STAGE, reason, **details).with_warnings(warnings)


def _failure_reason(rows: pd.DataFrame, dropped: dict[str, str], ok_views: list[str],
                    on_view_error: str) -> str | None:
    if not ok_views:
        if len(rows) == 1:
            return next(iter(dropped.values()))
        return f"all {len(rows)} views failed: " + "; ".join(f"{v}: {m}" for v, m in sorted(dropped.items()))
    if dropped and on_view_error == "fail":
        return "view(s) failed: " + "; ".join(f"{v}: {m}" for v, m in sorted(dropped.items()))
    return None


def _discard_view(f: h5py.File, view: str) -> None:
    if "views" in f and view in f["views"]:
        del f["views"][view]


__all__ = ["STAGE", "VIEW_ERROR_POLICIES", "extract_sequence"]
