"""Stage reruns (dry runs on a finished run state): a changed parameter of one stage reruns that stage and what
depends on it, never what comes before it; `--forcerun`, `--until`, single targets and newer inputs do what
docs/hpc.md says.

The finished state is made cheaply: every output of the demo DAG is created empty, then `snakemake --touch`
records the metadata (params, code, input) exactly as a real run would. Which rules come before or after a stage
is read from `snakemake --rulegraph`, so stages added to the workflow are covered without editing this file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LOCAL_PROFILE = REPO / "profiles" / "local"
TINY = {"preview": {"image_size": 64}, "demo": {"frames": 6, "size": 96}, "frames": {"max_frames": 6}}


def run_snakemake(workdir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile",
           str(LOCAL_PROFILE), "--cores", "1", "--configfile", "tiny.yaml", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def planned(workdir: Path, *args: str, text: list[str] | None = None) -> dict[str, int]:
    """Jobs a dry run would run, per rule (from its "Job stats" table; `all` left out)."""
    out = run_snakemake(workdir, "-n", *args)
    if text is not None:
        text.append(out)
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE)}
    counts.pop("all", None)
    return counts


class State:
    """A finished run of the demo DAG (empty outputs, real metadata) and its rule graph."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        summary = run_snakemake(workdir, "--summary")
        header = summary.index("output_file\t")
        outputs = [line.split("\t")[0] for line in summary[header:].splitlines()[1:] if "\t" in line]
        assert outputs, summary
        for out in outputs:
            path = workdir / out
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        run_snakemake(workdir, "--touch", "--forceall")  # in DAG order: mtimes + metadata of every job
        self.edges = self._rule_edges()
        text: list[str] = []
        #: jobs per rule of the whole DAG, and the sequences whose front end the targets need
        self.full = planned(workdir, "--forceall", text=text)
        self.sequences = sorted(set(re.findall(r"output: results/crops/(\S+)\.h5", text[0])))

    def _rule_edges(self) -> set[tuple[str, str]]:
        dot = run_snakemake(self.workdir, "--rulegraph", "--forceall")
        labels = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", dot, flags=re.MULTILINE))
        return {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.MULTILINE)}

    def closure(self, rule: str, downstream: bool) -> set[str]:
        found, todo = set(), [rule]
        while todo:
            r = todo.pop()
            nxt = {b for a, b in self.edges if a == r} if downstream else {a for a, b in self.edges if b == r}
            todo.extend(nxt - found)
            found |= nxt
        return found - {"all"}

    def overlay(self, name: str, changes: dict) -> str:
        cfg = yaml.safe_load((self.workdir / "tiny.yaml").read_text())
        for section, values in changes.items():
            cfg.setdefault(section, {}).update(values)
        (self.workdir / name).write_text(yaml.safe_dump(cfg))
        return name


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> State:
    workdir = tmp_path_factory.mktemp("reruns")
    (workdir / "config").symlink_to(REPO / "config")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return State(workdir)


def test_finished_state_is_up_to_date(state):
    assert len(state.sequences) >= 2 and state.full["crops"] == len(state.sequences)
    assert {"frames", "landmarks", "crops"} <= {r for edge in state.edges for r in edge}
    assert planned(state.workdir) == {}


@pytest.mark.parametrize("stage, changes", [
    ("crops", {"crops": {"scale": 1.4}}),
    ("landmarks", {"landmarks": {"min_score": 0.3}}),
])
def test_changed_parameter_reruns_its_stage_and_what_follows(state, stage, changes):
    overlay = state.overlay(f"changed_{stage}.yaml", changes)
    jobs = planned(state.workdir, "--configfile", overlay)
    assert jobs.get(stage) == len(state.sequences), jobs
    assert not set(jobs) & state.closure(stage, downstream=False), f"upstream of {stage} rerun: {jobs}"
    assert set(jobs) <= {stage} | state.closure(stage, downstream=True), jobs
    assert set(jobs) >= {stage} | (state.closure(stage, downstream=True) & {"frames", "landmarks", "crops"})


def test_forcerun_until_redoes_exactly_one_stage(state):
    jobs = planned(state.workdir, "--forcerun", "crops", "--until", "crops")
    assert jobs == {"crops": len(state.sequences)}
    overlay = state.overlay("changed_landmarks_until.yaml", {"landmarks": {"min_score": 0.3}})
    jobs = planned(state.workdir, "--configfile", overlay, "--until", "landmarks")
    assert jobs == {"landmarks": len(state.sequences)}


def test_single_sequence_target(state):
    target = f"results/crops/{state.sequences[0]}.h5"
    jobs = planned(state.workdir, target, "--forcerun", "landmarks")
    assert jobs == {"landmarks": 1, "crops": 1}


def test_newer_input_reruns_only_its_consumers(state):
    path = state.workdir / f"results/landmarks/{state.sequences[0]}.h5"
    before = path.stat()
    content = path.read_bytes()
    # new content, newer mtime (snakemake ignores a newer mtime when a small file's checksum is unchanged)
    path.write_bytes(content + b"rewritten")
    os.utime(path, (before.st_atime + 60, before.st_mtime + 60))
    try:
        jobs = planned(state.workdir)
    finally:
        path.write_bytes(content)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    downstream = state.closure("landmarks", downstream=True)
    assert jobs.get("crops") == 1 and "landmarks" not in jobs and "frames" not in jobs, jobs
    assert set(jobs) <= downstream, jobs


def test_forcerun_fit_for_one_annotator(state):
    """`--forcerun fit` with one annotator's dataset targets refits that annotator only."""
    datasets = sorted((state.workdir / "results/dataset").glob("*/*.h5"))
    if "fit" not in state.full or not datasets:
        pytest.skip("no fit stage / dataset targets in this workflow")
    annotator = datasets[0].parent.name
    targets = [str(p.relative_to(state.workdir)) for p in datasets if p.parent.name == annotator]
    jobs = planned(state.workdir, *targets, "--forcerun", "fit")
    assert jobs.get("fit") == len(state.sequences), jobs  # one annotator, every sequence
    assert state.full["fit"] > len(state.sequences)  # (the full DAG has several annotators)
    assert not set(jobs) & state.closure("fit", downstream=False), jobs
