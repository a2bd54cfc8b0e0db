"""SLURM execution: the slurm profile (dry runs need no cluster), job grouping, the local profile's GPU guard,
and a real run of the demo workflow on a throw-away single-node SLURM cluster with a fake GPU.

The real run installs Debian's slurmctld/slurmd/slurm-client/munge when missing (root + apt-get; ~10-40 s)
and skips with the reason otherwise (tests/slurm/cluster.py). Set ``NEUFACE_SLURM_INSTALL=0`` to forbid the
installation.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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


def planned_jobs(output: str) -> list[dict[str, str]]:
    """The jobs of a dry run: rule, resources (name -> value) and shell command of each."""
    jobs = []
    for block in re.split(r"^\s*(?:local)?rule (?=\w+:$)", output, flags=re.MULTILINE)[1:]:
        rule = block.split(":", 1)[0]
        res = re.search(r"^\s*resources: (.*)$", block, flags=re.MULTILINE)
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.MULTILINE)
        resources = dict(item.split("=", 1) for item in res.group(1).split(", ")) if res else {}
        jobs.append({"rule": rule, "resources": resources, "shell": shell.group(1) if shell else ""})
    return jobs


# ------------------------------------------------------------------------------------------------ profile
def test_slurm_profile_settings():
    cfg = profile_settings()
    assert cfg["executor"] == "slurm"
    assert cfg["retries"] >= 1 and cfg["jobs"] >= 1 and cfg["latency-wait"] >= 10
    # squeue, not sacct: plugin 2.8 waits forever for a job that sacct reports as "CANCELLED by <uid>" (scancel)
    assert cfg["slurm-status-command"] == "squeue"
    assert "cluster_device=auto" in cfg["config"]  # GPU rules ask for a GPU; the job resolves the device
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
    # a failed member of a group job makes Snakemake delete every member's outputs: fits are in no group
    grouped = {item.split("=", 1)[0] for item in cfg["groups"]}
    assert not {"fit", "fit_shard"} & grouped, grouped
    # group jobs ask for at most the profile's mem_mb total; it must not exceed the config's per-job cap
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert int(dict(r.split("=") for r in cfg["resources"])["mem_mb"]) <= shipped["scale"]["max_mem_mb"]


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


def test_slurm_profile_gpu_rules_request_a_gpu(workdir):
    """With the shipped config (fitting.device: cpu, for workstations) the slurm profile still makes every fit and
    the encoder pre-training ask for one GPU, with --device auto (resolved inside the job); CPU rules ask none.
    The local profile keeps the config's devices."""
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert shipped["fitting"]["device"] == "cpu" and shipped["cluster_device"] is None
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "tiny.yaml", "-n")
    jobs = planned_jobs(proc.stdout + proc.stderr)
    fits = [j for j in jobs if j["rule"] == "fit"]
    assert len(fits) == 9, [j["rule"] for j in jobs]  # 3 sequences x 3 annotators
    for job in [*fits, *(j for j in jobs if j["rule"] == "encoder_pretrain")]:
        assert job["resources"].get("gpu") == "1", job
        assert "--device auto" in job["shell"], job
    for job in jobs:
        if job["rule"] in ("frames", "crops", "metrics", "kit_build", "demo_synth_mead"):
            assert job["resources"].get("gpu", "0") == "0", job
    # landmarks: backend auto (dlib unless FAN weights are cached) keeps its own device and asks for no GPU
    assert all(j["resources"].get("gpu") == "0" for j in jobs if j["rule"] == "landmarks")

    # opting out on the command line: CPU nodes, no GPU requested
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "tiny.yaml", "-n",
                     "--config", "cluster_device=cpu")
    fits = [j for j in planned_jobs(proc.stdout + proc.stderr) if j["rule"] == "fit"]
    assert fits and all(j["resources"]["gpu"] == "0" and "--device cpu" in j["shell"] for j in fits)

    # the workstation profile is unchanged: the config's device, no GPU for a cpu fit
    proc = snakemake(workdir, "--profile", str(LOCAL_PROFILE), "--configfile", "tiny.yaml", "-n")
    fits = [j for j in planned_jobs(proc.stdout + proc.stderr) if j["rule"] == "fit"]
    assert fits and all(j["resources"]["gpu"] == "0" and "--device cpu" in j["shell"] for j in fits)


def test_slurm_profile_training_rules_request_a_gpu(workdir):
    """The optional training targets (rules/train.smk) are GPU rules on SLURM like fit: one GPU, --device auto."""
    (workdir / "train.yaml").write_text(yaml.safe_dump({**TINY, "train": {"train_split": "val", "eval_split": "test"}}))
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "-n", "train_regressor", "motion_prior",
                     "--configfile", "train.yaml")
    jobs = planned_jobs(proc.stdout + proc.stderr)
    training = [j for j in jobs if j["rule"] in ("finetune_regressor", "eval_regressor", "train_motion_prior",
                                                 "eval_motion_prior")]
    assert len(training) == 2 + 3 + 2 + 2, [j["rule"] for j in jobs]
    for job in training:
        assert job["resources"].get("gpu") == "1" and "--device auto" in job["shell"], job
    assert all(j["resources"].get("gpu", "0") == "0" for j in jobs if j["rule"].startswith("train_report"))


def test_auto_device_is_resolved_by_the_command(monkeypatch):
    """`--device auto` (what GPU rules get on SLURM) is resolved where the command runs: cuda when torch sees a
    device, else cpu; other names pass through. landmarks and encoder pretrain accept it like fit does."""
    import torch

    from neuface.cli import build_parser
    from neuface.cli.argtypes import resolve_device_name

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_name("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_name("auto") == "cuda"
    assert resolve_device_name("cuda:1") == "cuda:1" and resolve_device_name("cpu") == "cpu"
    parser = build_parser()
    args = parser.parse_args(["landmarks", "--frames", "f.h5", "--out", "l.h5", "--device", "auto"])
    assert args.device == "auto"
    args = parser.parse_args(["encoder", "pretrain", "--flame", "m", "--embedding", "e", "--out", "o",
                              "--device", "auto"])
    assert args.device == "auto"


def test_resource_requests_are_capped_by_the_config(workdir):
    """scale.max_mem_mb / scale.max_runtime_min cut the profile's requests (default-resources, set-resources, the
    rules' own) for every job; with the defaults, fit asks 16 GB / 10 min on its first attempt."""
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "tiny.yaml", "-n")
    jobs = planned_jobs(proc.stdout + proc.stderr)
    fit = next(j for j in jobs if j["rule"] == "fit")["resources"]
    assert (fit["mem_mb"], fit["runtime"]) == ("16000", "10"), fit
    (workdir / "capped.yaml").write_text(yaml.safe_dump({**TINY, "scale": {"max_mem_mb": 8000,
                                                                           "max_runtime_min": 7}}))
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "capped.yaml", "-n")
    jobs = planned_jobs(proc.stdout + proc.stderr)
    assert jobs
    for job in jobs:
        assert int(job["resources"]["mem_mb"]) <= 8000 and int(job["resources"]["runtime"]) <= 7, job
    fit = next(j for j in jobs if j["rule"] == "fit")["resources"]
    assert (fit["mem_mb"], fit["runtime"]) == ("8000", "7"), fit
    assert next(j for j in jobs if j["rule"] == "frames")["resources"]["runtime"] == "5"  # under the cap: kept


def test_group_components_are_configurable(workdir):
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "tiny.yaml", "-n",
                     "--group-components", "prep=1")
    assert group_jobs(proc.stdout + proc.stderr).count("prep") == 3  # one group job per sequence


def test_sharded_dry_run_groups_each_shards_stages(workdir):
    """With scale.shard_size the slurm profile makes one front-end job per shard and one fit job per (annotator,
    shard): 3 demo sequences in shards of 2 -> 2 prep_shard group jobs; the 2 x 3 fit shards are single jobs."""
    (workdir / "sharded.yaml").write_text(yaml.safe_dump({**TINY, "scale": {"shard_size": 2}}))
    proc = snakemake(workdir, "--profile", str(SLURM_PROFILE), "--configfile", "sharded.yaml", "-n")
    groups = group_jobs(proc.stdout + proc.stderr)
    assert groups.count("prep_shard") == 2 and "fitting_shard" not in groups, groups
    assert "rule frames:" not in proc.stdout
    fit_shards = [j for j in planned_jobs(proc.stdout) if j["rule"] == "fit_shard"]
    assert len(fit_shards) == 6 and all(j["resources"]["gpu"] == "1" for j in fit_shards)


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


SCANCEL_SEQ = "vox2__id900__synth__00001"  # the demo's monocular clip: 6 frames
# A fit slow enough to be cancelled while it runs (360 steps of ~0.06 s, a checkpoint after each), fast overall.
SCANCEL = {**TINY, "encoder": {"pretrain": {"steps": 2, "batch_size": 2, "pool_size": 4}},
           "fitting": {"annotators": ["neuface"],
                       "common": {"n_passes": 120, "converge_tol": 0.0, "window_frames": 2, "checkpoint_every": 1,
                                  "progress": False}},
           "scale": {"max_mem_mb": 20000, "max_runtime_min": 15}}


@pytest.mark.slow
def test_scancel_of_a_running_fit_is_retried_and_resumes(slurm_cluster, workdir):
    """`scancel` of a running fit job with the profile's own status command: the job is seen as failed, resubmitted
    (with the retry's larger request, cut to scale.max_*), the fit resumes from its checkpoint, and the run ends
    with rc 0 and the fit file. The fit asks for a GPU with the shipped fitting.device (cpu) and runs on the CPU
    (the test cluster's GPU is fake: torch sees no CUDA, so `auto` resolves to cpu inside the job)."""
    from neuface.status import read_status

    (workdir / "scancel.yaml").write_text(yaml.safe_dump(SCANCEL))
    cfg = profile_settings()
    fit = workdir / f"results/fits/neuface/{SCANCEL_SEQ}.h5"
    checkpoint = workdir / f"results/checkpoints/neuface/{SCANCEL_SEQ}.pt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = ["timeout", "-s", "INT", "-k", "30", "540", sys.executable, "-m", "snakemake",
           "--snakefile", str(REPO / "Snakefile"), str(fit.relative_to(workdir)),
           "--profile", str(SLURM_PROFILE), "--configfile", "scancel.yaml",
           "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
           "--jobs", "4", "--verbose",
           "--default-resources", *cfg["default-resources"], f"slurm_partition='{slurm_cluster.partition}'"]
    log_path = workdir / "snakemake.out"
    t0 = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # wait for the fit job to run and to have written a checkpoint, then cancel it
            cancelled = None
            while proc.poll() is None and time.monotonic() - t0 < 480:
                running = [j for j in _scontrol_jobs() if j.get("Comment", "").startswith("rule_fit")
                           and j.get("JobState") == "RUNNING"]
                if running and checkpoint.exists():
                    cancelled = running[0]["JobId"]
                    subprocess.run(["scancel", cancelled], check=True, timeout=30)
                    break
                time.sleep(0.2)
            t_cancel = time.monotonic() - t0
            rc = proc.wait(timeout=max(10.0, 560 - (time.monotonic() - t0)))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
    log = log_path.read_text()
    assert cancelled is not None, f"no running fit job was seen with a checkpoint:\n{log[-6000:]}"
    assert rc == 0, f"snakemake rc {rc} after scancel of job {cancelled}:\n{log[-8000:]}"
    logging.getLogger(__name__).info("fit job %s cancelled %.0f s in; run finished after %.0f s", cancelled,
                                     t_cancel, time.monotonic() - t0)

    # the cluster: the cancelled fit job, then a second one that completed
    run_id = re.search(r"--job-name (\S+)", log).group(1)
    fit_jobs = sorted((j for j in _scontrol_jobs() if j.get("JobName") == run_id
                       and j.get("Comment", "").startswith("rule_fit")), key=lambda j: int(j["JobId"]))
    assert [j["JobState"] for j in fit_jobs] == ["CANCELLED", "COMPLETED"], fit_jobs
    assert fit_jobs[0]["JobId"] == cancelled
    # snakemake saw the failure and retried; the retry asked for more, cut to the config's caps
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in log
    assert "Trying to restart job" in log
    calls = [c for c in re.findall(r"sbatch call: (sbatch .*)", log) if "--comment rule_fit" in c]
    assert len(calls) == 2, calls
    assert all("--gpus=1" in c for c in calls), calls  # shipped fitting.device cpu -> still a GPU on SLURM
    assert "--mem 16000 " in calls[0] and " -t 10 " in calls[0], calls[0]
    assert "--mem 20000 " in calls[1] and " -t 15 " in calls[1], calls[1]  # 32000 / 20 min, capped
    # the retried fit resumed from the checkpoint of the cancelled one, and finished
    fit_log = (workdir / f"results/logs/fit/neuface/{SCANCEL_SEQ}.log").read_text()
    assert "resuming from checkpoint" in fit_log, fit_log[-3000:]
    assert read_status(fit).ok
    assert not checkpoint.exists()  # removed after the successful fit
