"""Dataset stage throughput: ``pack`` (sequences/s) and the ``NeuFaceH5`` reader (clips/s).

Input: synthetic fit files (``neuface.dataset.fake``), 200 sequences × 100 frames × 1 view (quick: 20 × 50),
all accepted by the filter. References, measured in the same run on the same bytes:

* pack — a raw h5py copy of the same arrays into one file (contiguous, uncompressed, no checks, no
  provenance): the floor cost of moving the data. ``pack`` adds schema checks, chunking and gzip-4+shuffle.
* reader — raw h5py slicing of the same windows from an already open file (numpy arrays, no torch, no dict):
  the floor cost of reading. The reader adds the lazy handle, index lookup and tensor conversion.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import h5py

from neuface.dataset.fake import synthetic_fit_arrays, write_fit_file
from neuface.dataset.filter import FilterThresholds, filter_fits, write_manifest
from neuface.dataset.pack import pack_split
from neuface.dataset.reader import CLIP_ARRAYS, NeuFaceH5
from neuface.dataset.schema import FIT_ARRAYS

log = logging.getLogger("benchmarks.bench_dataset")

CLIP_LEN = 16


def _raw_copy(paths: list[Path], out: Path) -> None:
    with h5py.File(out, "w") as dst:
        for p in paths:
            with h5py.File(p, "r") as src:
                g = dst.create_group(f"sequences/{p.stem}")
                for name in FIT_ARRAYS:
                    g.create_dataset(name, data=src[name][()])


def _raw_read(path: Path, clips: list[tuple[str, str, int]], views: dict[str, list[str]]) -> int:
    n = 0
    with h5py.File(path, "r") as f:
        for seq, view, start in clips:
            g = f["sequences"][seq]
            vi = views[seq].index(view)
            _ = g["shape"][()]
            for key in CLIP_ARRAYS:
                _ = g[key][start:start + CLIP_LEN] if key == "frame_indices" else g[key][start:start + CLIP_LEN, vi]
            n += 1
    return n


def run(quick: bool = False) -> list[dict]:
    n_seq, n_frames = (20, 50) if quick else (200, 100)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        paths = [write_fit_file(tmp / "fits" / f"seq{i:04d}.h5", f"seq{i:04d}",
                                synthetic_fit_arrays(n_frames, 1, seed=i)) for i in range(n_seq)]
        th = FilterThresholds()
        filter_fits(paths[:1], {}, "neuface", th)  # warm-up: lazy imports
        t0 = time.perf_counter()
        recs = filter_fits(paths, {p.stem: "train" for p in paths}, "neuface", th)
        t_filter = time.perf_counter() - t0
        manifest = write_manifest(recs, tmp / "manifest.tsv", th, "neuface")

        t0 = time.perf_counter()
        _raw_copy(paths, tmp / "raw.h5")
        t_raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        pack_split(manifest, "train", tmp / "train.h5")
        t_pack = time.perf_counter() - t0
        size_raw, size_pack = (tmp / "raw.h5").stat().st_size, (tmp / "train.h5").stat().st_size
        rows.append({"name": f"filter ({n_seq} seq x {n_frames} frames)", "value": n_seq / t_filter,
                     "unit": "seq/s", "reference": None, "ratio": None})
        rows.append({"name": f"pack gzip-4 ({n_seq} seq x {n_frames} frames)", "value": n_seq / t_pack,
                     "unit": "seq/s", "reference": n_seq / t_raw, "ratio": t_raw / t_pack})
        rows.append({"name": "pack file size vs raw copy", "value": size_pack / 2**20, "unit": "MiB",
                     "reference": size_raw / 2**20, "ratio": size_pack / size_raw})

        ds = NeuFaceH5(tmp / "train.h5", clip_len=CLIP_LEN, stride=CLIP_LEN)
        clips = ds.clips()
        views = {p.stem: ["front"] for p in paths}
        t0 = time.perf_counter()
        for i in range(len(ds)):
            _ = ds[i]
        t_reader = time.perf_counter() - t0
        ds.close()
        t0 = time.perf_counter()
        n = _raw_read(tmp / "train.h5", clips, views)
        t_rawread = time.perf_counter() - t0
        rows.append({"name": f"reader clips (len {CLIP_LEN}, gzip file)", "value": len(clips) / t_reader,
                     "unit": "clips/s", "reference": n / t_rawread, "ratio": t_rawread / t_reader})
    return rows


if __name__ == "__main__":  # pragma: no cover
    from neuface.logs import setup_logging

    setup_logging(0)
    for row in run(quick=True):
        log.info("%s", row)
