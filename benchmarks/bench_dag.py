"""Workflow scaling: wall time of a dry run (``snakemake -n``: parse, read the sheet, build the DAG, plan every
job) for generated VoxCeleb2-like sample sheets of 1k, 10k and 100k monocular sequences.

Every row points at one real (tiny) file, so the rules see existing videos and every sequence gets its
frames -> landmarks -> crops chain (+ the stages added later). Figures:

* ``dag dry-run, N sequences``: seconds; reference = the 1k run of the same session (ratio = slowdown).
* ``dag growth exponent``: slope of log(time) against log(N) between the smallest and largest size
  (1 = linear; reference 1.0).
* ``dag cost per job``: milliseconds per planned job at the largest size (after the fixed start-up cost,
  estimated from the smallest size).
* ``dag dry-run, slurm profile``: the same with ``--profile profiles/slurm`` (job grouping) at 1k and 10k.
* ``dag dry-run, shards of 100``: ``scale.shard_size: 100`` at every size; reference = the per-sequence run of the
  same sheet. Then 1M sequences in shards of 1000 against the per-sequence 100k run (1M per sequence would take
  hours).

``quick=True`` uses 100 and 300 sequences (smoke test).
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

log = logging.getLogger("benchmarks.bench_dag")
SHARD_SIZE_QUICK = 50

REPO = Path(__file__).resolve().parents[1]


def make_sheet(n: int, path: Path, video: Path) -> Path:
    """A sample sheet of ``n`` monocular sequences (VoxCeleb2-like ids), every row pointing at ``video``."""
    lines = ["sequence\tview\tsplit\tpath\tdataset\tsubject"]
    splits = ("train",) * 8 + ("val", "test")
    for i in range(n):
        subject = f"id{i // 40:05d}"
        lines.append(f"vox2__{subject}__clip{i:07d}\tmono\t{splits[(i // 40) % 10]}\t{video}\tvoxceleb2\t{subject}")
    path.write_text("\n".join(lines) + "\n")
    return path


def make_workdir(root: Path) -> Path:
    """A working directory that sees the repository's config/ (the Snakefile reads config/config.yaml)."""
    root.mkdir(parents=True, exist_ok=True)
    link = root / "config"
    if not link.exists():
        link.symlink_to(REPO / "config")
    return root


def dry_run(workdir: Path, sheet: Path, profile: str | None = None, timeout: float = 7200,
            shard_size: int = 0) -> tuple[float, int]:
    """Seconds of ``snakemake -n`` on ``sheet`` (in shards of ``shard_size``; 0 = per sequence) and the number of
    jobs it planned."""
    overlay = workdir / f"overlay_{sheet.stem}_{shard_size}.yaml"
    overlay.write_text(yaml.safe_dump({"samples": str(sheet), "results": str(workdir / "results"),
                                       "scale": {"shard_size": shard_size}}))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile", str(overlay),
           "-n", "--quiet", "all"]
    cmd += ["--profile", str(REPO / "profiles" / profile)] if profile else ["--cores", "1"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dry run failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    match = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, flags=re.MULTILINE)
    return seconds, int(match.group(1)) if match else -1


def _row(name: str, value: float, unit: str, reference: float | None) -> dict:
    return {"name": name, "value": value, "unit": unit, "reference": reference,
            "ratio": value / reference if reference else None}


def run(quick: bool = False) -> list[dict]:
    sizes = [100, 300] if quick else [1_000, 10_000, 100_000]
    grouped_sizes = sizes[:1] if quick else sizes[:2]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_dag-") as tmp:
        work = make_workdir(Path(tmp) / "work")
        video = Path(tmp) / "clip.mp4"
        video.write_bytes(b"\0")  # only existence matters for planning
        times: dict[int, tuple[float, int]] = {}
        for n in sizes:
            sheet = make_sheet(n, Path(tmp) / f"sheet_{n}.tsv", video)
            times[n] = dry_run(work, sheet)
            log.info("%d sequences: %.1f s, %d jobs", n, *times[n])
        ref = times[sizes[0]][0]
        for n in sizes:
            rows.append(_row(f"dag dry-run, {n} sequences ({times[n][1]} jobs)", times[n][0], "s", ref))
        (n0, (t0, j0)), (n1, (t1, j1)) = (sizes[0], times[sizes[0]]), (sizes[-1], times[sizes[-1]])
        exponent = math.log(t1 / t0) / math.log(n1 / n0)
        rows.append(_row(f"dag growth exponent {n0}->{n1}", exponent, "exponent", 1.0))
        # fixed start-up cost ~ what the smallest run spends beyond its per-job share, solved from two sizes
        per_job = (t1 - t0) / max(j1 - j0, 1)
        rows.append(_row(f"dag cost per job at {n1}", 1e3 * per_job, "ms/job", 1e3 * t0 / max(j0, 1)))
        for n in grouped_sizes:
            seconds, jobs = dry_run(work, Path(tmp) / f"sheet_{n}.tsv", profile="slurm")
            rows.append(_row(f"dag dry-run, slurm profile (grouped), {n} sequences", seconds, "s", times[n][0]))
        # sharding (scale.shard_size): one job per (stage, shard); reference = per-sequence DAG of the same sheet
        for n in sizes:
            size = SHARD_SIZE_QUICK if quick else 100
            seconds, jobs = dry_run(work, Path(tmp) / f"sheet_{n}.tsv", shard_size=size)
            log.info("%d sequences in shards of %d: %.1f s, %d jobs", n, size, seconds, jobs)
            rows.append(_row(f"dag dry-run, shards of {size}, {n} sequences ({jobs} jobs)", seconds, "s",
                             times[n][0]))
        n_max, size = (sizes[-1] * 3, SHARD_SIZE_QUICK) if quick else (1_000_000, 1000)
        sheet = make_sheet(n_max, Path(tmp) / f"sheet_{n_max}.tsv", video)
        seconds, jobs = dry_run(work, sheet, shard_size=size)
        log.info("%d sequences in shards of %d: %.1f s, %d jobs", n_max, size, seconds, jobs)
        rows.append(_row(f"dag dry-run, shards of {size}, {n_max} sequences ({jobs} jobs); reference: per "
                         f"sequence at {sizes[-1]}", seconds, "s", times[sizes[-1]][0]))
    return rows
