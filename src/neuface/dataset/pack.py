"""Pack the accepted fits of one split and annotator into one HDF5 file (``neuface.dataset``, ``docs/dataset.md``).

The file is written under a temporary name and renamed at the end (:func:`neuface.io_utils.atomic_path`), so a
killed job never leaves a file that looks complete. Sequences are streamed one at a time (one array at a
time), so memory stays bounded by the largest single array of one sequence. An empty split still gives a valid
file with ``n_sequences = 0``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from neuface import __version__
from neuface.dataset.filter import read_manifest
from neuface.dataset.schema import (
    ACCEPTED,
    DATASET_DTYPES,
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    FIT_ARRAYS,
    FIT_FORMAT,
    attr_str,
    attr_str_list,
    check_group,
    check_shot_arrays,
    sequence_shots,
    str_list,
)
from neuface.errors import NeufaceError
from neuface.input_warnings import input_warnings, split_codes
from neuface.io_utils import atomic_path
from neuface.status import read_status_attrs

log = logging.getLogger(__name__)

#: Frames per chunk along the time axis.
CHUNK_FRAMES = 64
COMPRESSIONS = ("gzip", "lzf", "none")


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _storage(compression: str) -> dict[str, Any]:
    if compression not in COMPRESSIONS:
        raise NeufaceError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if compression == "none":
        return {}
    opts: dict[str, Any] = {"compression": compression, "shuffle": True}
    if compression == "gzip":
        opts["compression_opts"] = 4
    return opts


def _write_array(group: h5py.Group, name: str, data: np.ndarray, storage: dict[str, Any]) -> None:
    data = np.ascontiguousarray(data, dtype=DATASET_DTYPES[name])
    if name == "shape" or data.size == 0:
        group.create_dataset(name, data=data)
        return
    chunks = (min(data.shape[0], CHUNK_FRAMES),) + data.shape[1:]
    group.create_dataset(name, data=data, chunks=chunks, **storage)


def _copy_sequence(fit_path: Path, out: h5py.Group, row: dict[str, str], storage: dict[str, Any]) -> dict[str, Any]:
    """Copy one accepted fit into ``out`` (a new group); returns the fit's provenance attributes."""
    try:
        src = h5py.File(fit_path, "r")
    except OSError as exc:
        raise NeufaceError(f"cannot open fit {fit_path} of accepted sequence {row['sequence']}: {exc}") from None
    with src:
        status = read_status_attrs(src.attrs)
        fmt = attr_str(src.attrs.get("format", ""))
        problems, sizes = check_group(src, FIT_ARRAYS)
        if not problems:
            problems = check_shot_arrays(src, sizes)
        if fmt != FIT_FORMAT or not status.ok or problems:
            raise NeufaceError(
                f"fit {fit_path} no longer matches the manifest (accepted, but format={fmt!r}, "
                f"status={status.status!r}, problems: {', '.join(problems) or 'none'}); re-run the filter"
            )
        n_frames = sizes["F"]
        for name in FIT_ARRAYS:
            _write_array(out, name, src[name][()], storage)
        _write_array(out, "frame_indices", np.arange(n_frames, dtype=np.int64), storage)
        shots = sequence_shots(src)
        if len(shots) > 1:  # a cut sequence: its shots and one β per shot (absent: one shot, as before)
            out.create_dataset("shots", data=shots)
            out.create_dataset("shape_shots", data=np.asarray(src["shape_shots"][()], dtype=np.float32))
            for key in ("shot_reasons", "shot_identities"):
                if key in src.attrs:
                    out.attrs[key] = src.attrs[key]
        views = attr_str_list(src.attrs["views"])
        prov = {
            "flame_sha256": attr_str(src.attrs.get("flame_sha256", "")),
            "encoder_id": attr_str(src.attrs.get("encoder_id", "")),
            "config_hash": attr_str(src.attrs.get("config_hash", "")),
            "annotator": attr_str(src.attrs.get("annotator", "")),
        }
        a = out.attrs
        a["views"] = str_list(views)
        a["n_views"] = len(views)
        a["fps"] = float(src.attrs.get("fps", float("nan")))
        a["n_frames"] = int(n_frames)
        a["n_shots"] = len(shots)
        for key, value in prov.items():
            a[key] = value
        a["source"] = str(fit_path)
        for key in ("shape_norm", "detected_frac", "nme", "nme_eye"):
            a[key] = float(row.get(key, "nan"))
        # partial-input codes (truncated video, trimmed / missing / dropped views): the manifest's record of what
        # the filter judged, or the fit's own status for a manifest that predates the column
        codes = split_codes(row.get("warnings", "")) or input_warnings(status.warnings)
        a["warnings"] = str_list(codes)
        if codes:
            log.info("sequence %s packed with partial-input warning(s): %s", row["sequence"], ", ".join(codes))
        return {**prov, "n_shape": sizes["S"], "n_exp": sizes["E"]}


def pack_split(manifest: str | os.PathLike, split: str, out: str | os.PathLike, flame: str | os.PathLike | None = None,
               annotator: str | None = None, compression: str = "gzip") -> dict[str, Any]:
    """Write ``out`` with the accepted sequences of ``split`` listed in ``manifest``.

    Args:
        manifest: the filter manifest TSV (:func:`neuface.dataset.filter.write_manifest`).
        split: ``train`` / ``val`` / ``test`` (any split name in the manifest).
        out: output ``.h5`` path.
        flame: optional FLAME model file; its sha256 must equal the fits' ``flame_sha256``.
        annotator: expected annotator (default: the manifest's).
        compression: ``gzip`` (level 4), ``lzf`` or ``none``; byte shuffle is on when compressed.
    Returns:
        summary dict (``n_sequences``, ``n_frames``, ``seconds``, ``path``).
    Raises:
        NeufaceError: unreadable manifest, accepted fit missing or changed, mixed FLAME models / sizes.
    """
    storage = _storage(compression)
    rows, meta = read_manifest(manifest)
    annotator = annotator or str(meta.get("annotator", ""))
    selected = [r for r in rows if r["split"] == split and r["status"] == ACCEPTED]
    wrong = sorted({r["annotator"] for r in selected} - {annotator}) if annotator else []
    if wrong:
        raise NeufaceError(f"manifest {manifest} has accepted rows of annotator(s) {wrong}, expected {annotator!r}")
    if not selected:
        log.warning("split %r of %s has no accepted sequence: writing an empty dataset", split, manifest)
    flame_sha = sha256_file(flame) if flame is not None else None
    t0 = time.perf_counter()
    shas: set[str] = set()
    encoders: set[str] = set()
    configs: set[str] = set()
    sizes: set[tuple[int, int]] = set()
    n_frames = n_partial = 0
    out = Path(out)
    with atomic_path(out, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            seq_root = f.create_group("sequences")
            for i, row in enumerate(selected):
                prov = _copy_sequence(Path(row["path"]), seq_root.create_group(row["sequence"]), row, storage)
                shas.add(prov["flame_sha256"])
                encoders.add(prov["encoder_id"])
                configs.add(prov["config_hash"])
                sizes.add((prov["n_shape"], prov["n_exp"]))
                n_frames += int(seq_root[row["sequence"]].attrs["n_frames"])
                n_partial += bool(len(seq_root[row["sequence"]].attrs["warnings"]))
                if len(shas) > 1 or len(sizes) > 1:
                    raise NeufaceError(
                        f"split {split!r} mixes FLAME models {sorted(shas)} or sizes {sorted(sizes)} "
                        f"(at sequence {row['sequence']}); one dataset file needs one model"
                    )
                if flame_sha is not None and prov["flame_sha256"] != flame_sha:
                    raise NeufaceError(
                        f"--flame {flame} has sha256 {flame_sha[:12]}… but fit {row['path']} was made with "
                        f"{prov['flame_sha256'][:12]}…"
                    )
                if (i + 1) % 100 == 0:
                    log.info("packed %d / %d sequences", i + 1, len(selected))
            n_shape, n_exp = next(iter(sizes)) if sizes else (100, 50)
            a = f.attrs
            a["format"] = DATASET_FORMAT
            a["format_version"] = DATASET_FORMAT_VERSION
            a["split"] = split
            a["annotator"] = annotator
            a["n_sequences"] = len(selected)
            a["n_frames_total"] = n_frames
            a["n_sequences_with_warnings"] = n_partial
            a["n_shape"] = int(n_shape)
            a["n_exp"] = int(n_exp)
            a["flame_sha256"] = next(iter(shas)) if shas else (flame_sha or "")
            a["encoder_ids"] = str_list(sorted(encoders))
            a["config_hashes"] = str_list(sorted(configs))
            a["neuface_version"] = __version__
            a["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            a["manifest"] = str(manifest)
            a["thresholds"] = json.dumps(meta.get("thresholds", {}), sort_keys=True)
            a["compression"] = compression
    seconds = time.perf_counter() - t0
    log.info("wrote %s: %d sequences, %d frames in %.2f s", out, len(selected), n_frames, seconds)
    return {"path": str(out), "n_sequences": len(selected), "n_frames": n_frames, "seconds": seconds}


__all__ = ["CHUNK_FRAMES", "COMPRESSIONS", "pack_split", "sha256_file"]
