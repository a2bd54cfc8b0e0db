"""SLURM execution: the slurm profile (dry runs need no cluster), job grouping, the local profile's GPU guard,
and a real run of the demo workflow on a throw-away single-node SLURM cluster with a fake GPU.

The real run installs Debian's slurmctld/slurmd/slurm-client/munge when missing (root + apt-get; ~10-40 s)
and skips with the reason otherwise (tests/slurm/cluster.py). Set ``NEUFACE_SLURM_INSTALL=0`` to forbid the
installation.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "profiles" / "local"
TINY = {"preview": {"image_size": 64}, "demo": {"frames": 6, "size": 96}, "frames": {"max_frames": 6}}


def _cluster_module():
    spec = importlib.util.spec_from_file_location("neuface_test_cluster", REPO / "tests" / "slurm" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def profile_settings(profile: Path = SLURM_PROFILE) -> dict:
    return yaml.safe_load((profile / "config.yaml").read_text())


def snakemake(workdir: Path, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m snakemake`` on the repository's Snakefile in ``workdir``, under ``timeout -s INT``.

    A snakemake waiting on SLURM ignores SIGTERM: SIGINT makes it cancel its jobs and exit.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    if shutil.which("timeout"):
        cmd = ["timeout", "-s", "INT", "-k", "30", str(timeout), *cmd]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout + 60)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed (rc {proc.returncode}):\n"
                             f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A run directory seeing the repository's config/ (demo sheet: outputs, kit and demo videos land here)."""
    (tmp_path / "config").symlink_to(REPO / "config")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return tmp_path


def group_jobs(output: str) -> list[str]:
    return re.findall(r"Group job (\S+) \(jobs in lexicogr\. order\)", output)


# ------------------------------------------------------------------------------------------------ profile
def test_slurm_profile_settings():
    cfg = profile_settings()
    assert cfg["executor"] == "slurm"
    assert cfg["retries"] >= 1 and cfg["jobs"] >= 1 and cfg["latency-wait"] >= 10
    assert cfg["slurm-status-command"] in ("sacct", "squeue")
    assert cfg["slurm-keep-successful-logs"] is True
    assert set(cfg["rerun-triggers"]) >= {"mtime", "params", "input", "code"}
    defaults = dict(item.split("=", 1) for item in cfg["default-resources"])
    # CPU rules request no GPU; a default gpu_model would put a GPU on every job; a default cpus_per_task would
    # override every rule's threads and cpus_per_gpu.
    assert not {"gpu", "gpu_model", "gres", "cpus_per_task", "cpus_per_gpu"} & set(defaults)
    for name in ("runtime", "mem_mb"):
        grow = [eval(defaults[name], {"attempt": a}) for a in (1, 2, 3)]  # noqa: S307 - our own profile
        assert grow[0] > 0 and grow[0] < grow[1] < grow[2], (name, grow)
    assert "gpu=local" in cfg["set-resource-scopes"]  # the group cap must not throttle the whole cluster


def test_local_profile_has_one_gpu():
    cfg = profile_settings(LOCAL_PROFILE)
    assert "gpu=1" in cfg["resources"]


def test_slurm_profile_dry_run_needs_no_cluster(workdir):
    """Planning with the slurm profile submits nothing; the front end of all sequences is one group job."""
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "tiny.yaml", "-n")
    out = proc.stdout + proc.stderr
    for rule in ("kit_build", "demo_synth_mead", "preview_head", "frames", "landmarks", "crops"):
        assert f"rule {rule}:" in out
    assert group_jobs(out).count("prep") == 1  # 3 sequences <= prep components
    assert "sbatch" not in out
    assert not (workdir / "results").exists()


def test_group_components_are_configurable(workdir):
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "tiny.yaml", "-n",
                     "--group-components", "prep=1")
    assert group_jobs(proc.stdout + proc.stderr).count("prep") == 3  # one group job per sequence


def test_sharded_dry_run_groups_each_shards_stages(workdir):
    """With scale.shard_size the slurm profile makes one front-end job per shard and one fit job per (annotator,
    shard): 3 demo sequences in shards of 2 -> 2 prep_shard and 2 x 3 fitting_shard group jobs."""
    (workdir / "sharded.yaml").write_text(yaml.safe_dump({**TINY, "scale": {"shard_size": 2}}))
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "sharded.yaml", "-n")
    groups = group_jobs(proc.stdout + proc.stderr)
    assert groups.count("prep_shard") == 2 and groups.count("fitting_shard") == 6, groups
    assert "rule frames:" not in proc.stdout and "rule fit_shard:" in proc.stdout


def test_local_profile_never_runs_two_gpu_jobs_at_once(workdir):
    """Two independent rules marked as GPU rules (both ready once the kit exists) run one after the other."""
    pair = ("demo_synth_mono", "preview_head")
    proc = snakemake(workdir, "--profile", str(LOCAL_PROFILE), "--configfile", "tiny.yaml", "--cores", "2",
                     "--set-resources", *(f"{r}:gpu=1" for r in pair), "--until", *pair, timeout=240)
    log = proc.stdout + proc.stderr
    events = re.findall(r"^(?:local)?rule (\w+):|Finished jobid: \d+ \(Rule: (\w+)\)", log, flags=re.MULTILINE)
    order = [("start", s) if s else ("end", e) for s, e in events if (s or e) in pair]
    assert len(order) == 4, order
    assert order[0][0] == "start" and order[1] == ("end", order[0][1]), f"GPU jobs overlapped: {order}"


# ------------------------------------------------------------------------------------------------ real SLURM
@pytest.fixture(scope="module")
def slurm_cluster():
    cluster_mod = _cluster_module()
    try:
        cluster_mod.ensure_packages()
    except cluster_mod.ClusterUnavailable as exc:
        pytest.skip(f"no SLURM test cluster: {exc}")
    root = Path(tempfile.mkdtemp(prefix="nfslurm-", dir="/tmp"))  # short: holds the munge socket
    cluster = cluster_mod.LocalSlurm(root)
    try:
        cluster.start()
    except cluster_mod.ClusterUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"no SLURM test cluster: {exc}")
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


def _scontrol_jobs() -> list[dict[str, str]]:
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, timeout=30).stdout
    return [dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", line)) for line in out.splitlines() if "JobId=" in line]


@pytest.mark.slow
def test_demo_workflow_runs_on_slurm(slurm_cluster, workdir):
    """The demo DAG through sbatch: grouped front end, a GPU request for the GPU rule, every output built."""
    cfg = profile_settings()
    defaults = [*cfg["default-resources"], f"slurm_partition='{slurm_cluster.partition}'"]
    # preview_head stands in for a GPU rule (fit requests gpu=1 itself); CLI flags replace whole profile keys.
    set_resources = [*cfg.get("set-resources", []), "preview_head:gpu=1"]
    proc = snakemake(
        workdir, "--profile", str(SLURM_PROFILE), "--configfile", "tiny.yaml",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
        "--seconds-between-status-checks", "2", "--jobs", "4", "--verbose",
        "--default-resources", *defaults, "--set-resources", *set_resources,
        "--until", "crops", "preview_head", timeout=480,  # the front half: fit etc. cost minutes on CPU
    )
    log = proc.stdout + proc.stderr

    # every output exists
    for seq in ("carphone", "mead__M900__neutral__level_1__001", "vox2__id900__synth__00001"):
        for stage in ("frames", "landmarks", "crops"):
            assert (workdir / f"results/{stage}/{seq}.h5").stat().st_size > 0, (stage, seq)
    assert (workdir / "results/preview/head_model.png").stat().st_size > 0

    # every job went through sbatch, into our partition; the GPU rule (only) asked for a GPU
    calls = re.findall(r"sbatch call: (sbatch .*)", log)
    comments = [re.search(r"--comment (\S+)", c).group(1) for c in calls]
    assert sorted(comments) == sorted([
        "rule_kit_build", "rule_demo_carphone", "rule_demo_synth_mead", "rule_demo_synth_mono",
        "rule_preview_head", "rule_prep_crops_frames_landmarks"]), comments
    for call, comment in zip(calls, comments, strict=True):
        assert f"-p {slurm_cluster.partition}" in call
        assert ("--gpus=1" in call) == (comment == "rule_preview_head"), call
        assert "--cpus-per-task=" in call and "--mem " in call and " -t " in call
    group_call = calls[comments.index("rule_prep_crops_frames_landmarks")]
    assert "group_prep" in group_call  # one SLURM job ran the 9 front-end jobs
    # its size: 3 sequences side by side (3 CPUs, 3 x mem_mb), runtime summed over the 3 stages
    stage_minutes = sum(eval(item.split("=", 1)[1], {"attempt": 1})  # noqa: S307 - our own profile
                        for item in cfg["set-resources"] if item.split(":")[0] in ("frames", "landmarks", "crops")
                        and ":runtime=" in item)
    mem = eval(dict(d.split("=", 1) for d in cfg["default-resources"])["mem_mb"], {"attempt": 1})  # noqa: S307
    assert f" -t {stage_minutes} " in group_call and "--cpus-per-task=3" in group_call, group_call
    assert f"--mem {3 * mem} " in group_call, group_call

    # the cluster's own records agree: as many jobs as sbatch calls, all completed, GPU TRES on the GPU job
    run_id = re.search(r"--job-name (\S+)", calls[0]).group(1)
    jobs = [j for j in _scontrol_jobs() if j.get("JobName") == run_id]
    assert len(jobs) == len(calls)
    assert {j["JobState"] for j in jobs} == {"COMPLETED"}, [(j["JobId"], j["JobState"]) for j in jobs]
    gpu_jobs = [j["Comment"] for j in jobs if "gpu" in j.get("TresPerJob", "")]
    assert gpu_jobs == ["rule_preview_head"]
    # SLURM logs are kept for successful jobs too
    logs = workdir / ".snakemake/slurm_logs"
    assert list(logs.glob("group_prep*/**/*.log")) and list(logs.glob("rule_preview_head/**/*.log"))
