"""The Snakemake workflow: lint, dry-run, and a real run of the stages that exist, in a temporary results dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def override(tmp_path) -> Path:
    """A config overlay that sends every output (kit included) into tmp_path."""
    sheet = tmp_path / "videos.tsv"
    sheet.write_text((REPO / "config/demo/videos.tsv").read_text().replace("resources/demo/", f"{tmp_path}/demo/"))
    cfg = {
        "samples": str(sheet),
        "results": str(tmp_path / "results"),
        "kit": {"dir": str(tmp_path / "kit"), "seed": 0},
        "assets": {
            "flame_model": str(tmp_path / "kit/flame/generic_model.pkl"),
            "landmark_embedding": str(tmp_path / "kit/flame/landmark_embedding.npy"),
        },
        "preview": {"image_size": 96},
        "demo": {"dir": str(tmp_path / "demo"), "frames": 6, "size": 128},
        "frames": {"max_frames": 6},
        "encoder": {"kind": "builtin", "weights": str(tmp_path / "encoders/builtin.pt"),
                    "pretrain": {"steps": 2, "batch_size": 2, "pool_size": 4, "seed": 0, "device": "cpu"}},
        "fitting": {"annotators": ["regress", "flamefit", "neuface"], "device": "cpu",
                    "common": {"n_passes": 1, "window_frames": 4},
                    "settings": {"flamefit": {"flamefit_steps": [2, 2]}}},
        "report": {"table2": ["regress", "flamefit", "neuface"], "table3": ["neuface"], "overlay_sequences": 1,
                   "overlay_annotators": ["neuface"], "overlay_max_frames": 3, "overlay_size": 64},
    }
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_lint_is_clean():
    proc = snakemake("--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_schema_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"preview": {"image_size": 96, "colour": "red"}}))
    proc = snakemake("-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    assert "colour" in proc.stdout + proc.stderr


def test_dry_run_plans_every_stage(override):
    proc = snakemake("-n", "--configfile", str(override), "--cores", "1")
    for rule in ("kit_build", "preview_head", "demo_carphone", "demo_synth_mead", "demo_synth_mono",
                 "frames", "landmarks", "crops", "encoder_pretrain", "fit", "filter", "pack", "metrics", "report"):
        assert f"rule {rule}:" in proc.stdout


def test_encoder_pretrain_passes_the_2d_only_settings_only_when_set(override, tmp_path):
    """encoder.pretrain.param_weight / prior_weight: a DECA-like Φ (2D landmarks + β/ψ prior); null keeps the
    command, and so the shipped-weights match, exactly as before."""
    proc = snakemake("-n", "-p", "--configfile", str(override), "--cores", "1")
    command = [c for c in proc.stdout.splitlines() if "encoder pretrain" in c]
    assert len(command) == 1 and "--param-weight" not in command[0] and "--prior-weight" not in command[0]
    cfg = yaml.safe_load(override.read_text())
    cfg["encoder"]["pretrain"].update(param_weight=0, prior_weight=0.01)
    path = tmp_path / "phi_2d.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "-p", "--configfile", str(path), "--cores", "1")
    command = [c for c in proc.stdout.splitlines() if "encoder pretrain" in c]
    assert len(command) == 1 and "--param-weight 0 --prior-weight 0.01" in command[0]
    cfg["encoder"]["pretrain"]["prior_weight"] = -0.5
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(path), check=False)
    assert proc.returncode != 0 and "prior_weight" in proc.stdout + proc.stderr


def test_real_run_of_every_stage(override, tmp_path):
    """The whole DAG on the demo sheet with tiny settings: every output exists with an 'ok' status."""
    from neuface.sheets import read_sheet
    from neuface.status import read_status

    snakemake("--configfile", str(override), "--cores", "2", "--profile", str(REPO / "profiles/local"))
    png = tmp_path / "results/preview/head_model.png"
    assert png.stat().st_size > 1000
    assert (tmp_path / "results/logs/assets/kit_build.log").exists()
    assert (tmp_path / "results/benchmarks/preview/head_model.tsv").exists()
    sheet = read_sheet(REPO / "config/demo/videos.tsv")
    for sequence in sorted(sheet["sequence"].unique()):
        for stage in ("frames", "landmarks", "crops"):
            status = read_status(tmp_path / f"results/{stage}/{sequence}.h5")
            assert status.ok, status.summary()
            assert (tmp_path / f"results/logs/{stage}/{sequence}.log").stat().st_size > 0
        for annotator in ("regress", "flamefit", "neuface"):
            status = read_status(tmp_path / f"results/fits/{annotator}/{sequence}.h5")
            assert status.ok, status.summary()
            assert (tmp_path / f"results/metrics/{annotator}/{sequence}.json").stat().st_size > 0
    for annotator in ("regress", "flamefit", "neuface"):
        manifest = (tmp_path / f"results/filter/{annotator}.tsv").read_text()
        assert all(seq in manifest for seq in sheet["sequence"].unique())  # a line for every sequence
        for split in sorted(sheet["split"].unique()):
            assert (tmp_path / f"results/dataset/{annotator}/{split}.h5").is_file()
    table2 = (tmp_path / "results/report/table2.md").read_text()
    assert all(name in table2 for name in ("regress", "flamefit", "neuface"))
    assert list((tmp_path / "results/report/overlays").glob("*.mp4"))
    # Changing only the preview parameter reruns the preview, not the kit.
    cfg = yaml.safe_load(override.read_text())
    cfg["preview"]["image_size"] = 80
    override.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(override), "--cores", "1", "--profile", str(REPO / "profiles/local"))
    assert "preview_head" in proc.stdout
    assert "kit_build" not in proc.stdout


def test_tiny_synthetic_benchmark_reports_mpve(override, tmp_path):
    """`make benchmark` in miniature: GT landmarks + noise replace detection; the tables gain MPVE and NME-GT."""
    bench = tmp_path / "bench"
    rows = ["sequence\tview\tsplit\tpath\tdataset\tsubject\temotion\tground_truth"]
    views = ["front", "down", "top", "left_30", "left_60", "right_30", "right_60"]
    rows += [f"bm_mead\t{v}\tval\t{bench}/mead/bm_mead/{v}.mp4\tsynth_mead\tS1\tneutral\t{bench}/mead/bm_mead/gt.npz"
             for v in views]
    rows.append(f"bm_mono\tmono\tval\t{bench}/mono/bm_mono/front.mp4\tsynth_mono\tS2\t\t{bench}/mono/bm_mono/gt.npz")
    sheet = tmp_path / "bench.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    cfg = yaml.safe_load(override.read_text())
    cfg.update({
        "samples": str(sheet),
        "results": str(tmp_path / "bench_results"),
        "benchmark": {"dir": str(bench), "frames": 6, "size": 96, "fps": 25, "noise_seed": 0,
                      "noise": {"sigma": 1.0, "outlier_prob": 0.0, "outlier_max": 0.0, "miss_prob": 0.0,
                                "bias": 0.5}},
    })
    cfg["fitting"]["annotators"] = ["gt", "regress", "neuface"]
    cfg["report"].update({"table2": ["gt", "regress", "neuface"], "table3": ["neuface"], "overlay_sequences": 0})
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(cfg))
    snakemake("--configfile", str(config), "--cores", "2", "--profile", str(REPO / "profiles/local"))
    out = tmp_path / "bench_results"
    assert not (out / "logs/landmarks/bm_mono.log").read_text().count("dlib")  # ground truth, not a detector
    table2 = (out / "report/table2.md").read_text()
    assert "MPVE" in table2 and "NME-GT" in table2 and "CVD" in table2
    import json

    metrics = json.loads((out / "metrics/neuface/bm_mead.json").read_text())["metrics"]
    assert metrics["mpve"] is not None and metrics["mpve"] > 0 and metrics["cvd"] is not None
    # the `gt` annotator writes the true parameters as a fit: zero error against the ground truth, every view
    for sequence in ("bm_mead", "bm_mono"):
        truth = json.loads((out / f"metrics/gt/{sequence}.json").read_text())["metrics"]
        assert truth["mpve"] < 1e-3 and truth["mpve_aligned"] < 1e-3 and truth["nme_gt"] < 1e-3, truth
    assert "gt" in table2


def _sharded(override: Path, tmp_path: Path, shard_size: int, **changes) -> Path:
    cfg = yaml.safe_load(override.read_text())
    cfg["scale"] = {"shard_size": shard_size}
    cfg.update(changes)
    path = tmp_path / f"sharded_{shard_size}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _job_counts(stdout: str) -> dict[str, int]:
    import re

    table = stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE)}


def test_sharded_dry_run_plans_one_job_per_shard_and_stage(override, tmp_path, carphone_path):
    sheet = tmp_path / "many.tsv"
    sheet.write_text("sequence\tview\tsplit\tpath\n" + "".join(
        f"clip{i:02d}\tfront\t{'train' if i % 3 else 'val'}\t{carphone_path}\n" for i in range(10)))
    config = _sharded(override, tmp_path, 4, samples=str(sheet))
    jobs = _job_counts(snakemake("-n", "--configfile", str(config), "--cores", "1").stdout)
    n_shards, n_annotators = 3, 3  # 10 sequences in shards of 4
    for rule in ("frames", "landmarks", "crops"):
        assert jobs[f"{rule}_shard"] == n_shards and rule not in jobs, jobs
    assert jobs["fit_shard"] == jobs["metrics_shard"] == n_shards * n_annotators and "fit" not in jobs
    assert jobs["filter"] == n_annotators and jobs["pack"] == n_annotators * 2


def test_sharding_refuses_the_synthetic_benchmark(override, tmp_path):
    config = _sharded(override, tmp_path, 2, benchmark={
        "dir": str(tmp_path / "bench"), "frames": 6, "size": 96, "fps": 25, "noise_seed": 0,
        "noise": {"sigma": 1.0, "outlier_prob": 0.0, "outlier_max": 0.0, "miss_prob": 0.0, "bias": 0.5}})
    proc = snakemake("-n", "--configfile", str(config), check=False)
    assert proc.returncode != 0 and "scale.shard_size" in proc.stdout + proc.stderr


def test_sharded_real_run_reuses_finished_sequences(override, tmp_path):
    """The demo DAG in shards of 2: same per-sequence outputs as without sharding, markers per shard, and a
    forced rerun of a stage reuses its finished sequences instead of recomputing them."""
    import pandas as pd

    from neuface.sheets import read_sheet
    from neuface.status import read_status

    cfg = yaml.safe_load(override.read_text())
    cfg["fitting"]["annotators"] = ["regress", "neuface"]
    cfg["report"].update({"table2": ["regress", "neuface"]})
    override.write_text(yaml.safe_dump(cfg))
    config = _sharded(override, tmp_path, 2)
    profile = ("--profile", str(REPO / "profiles/local"))
    snakemake("--configfile", str(config), "--cores", "2", *profile)
    results = tmp_path / "results"
    sequences = sorted(read_sheet(REPO / "config/demo/videos.tsv")["sequence"].unique())
    for sequence in sequences:
        for stage in ("frames", "landmarks", "crops", "fits/neuface", "fits/regress"):
            assert read_status(results / f"{stage}/{sequence}.h5").ok, (stage, sequence)
        assert (results / f"metrics/neuface/{sequence}.json").stat().st_size > 0
    markers = sorted((results / "shards").rglob("shard-*[0-9].tsv"))
    assert len(markers) == 2 * 7  # 2 shards x (frames, landmarks, crops, 2 fits, 2 metrics)
    assert set(pd.concat([pd.read_csv(m, sep="\t") for m in markers])["status"]) == {"ok"}
    assert "neuface" in (results / "report/table2.md").read_text()
    # a forced rerun of one stage: its sequences are reused, nothing downstream is redone
    snakemake("--configfile", str(config), "--cores", "2", *profile, "--forcerun", "crops_shard",
              "--until", "crops_shard")
    crops = pd.concat([pd.read_csv(m, sep="\t") for m in sorted((results / "shards/crops").glob("*[0-9].tsv"))])
    assert sorted(crops["sequence"]) == sequences and set(crops["status"]) == {"reused"}
    # a changed fitting parameter reruns fit shards and what follows, not the front end
    cfg = yaml.safe_load(config.read_text())
    cfg["fitting"]["common"]["n_passes"] = 2
    config.write_text(yaml.safe_dump(cfg))
    jobs = _job_counts(snakemake("-n", "--configfile", str(config), "--cores", "1", *profile).stdout)
    assert jobs["fit_shard"] == 4 and not {"frames_shard", "landmarks_shard", "crops_shard"} & set(jobs), jobs


def test_report_rule_on_a_monocular_only_sheet(override, tmp_path):
    """`rule report` alone, on metrics of monocular sequences only (its inputs written here, no upstream rule
    allowed): it succeeds, every declared output exists and the CVD figure is a placeholder that says why."""
    from PIL import Image
    from test_metrics import tiny_flame_files
    from test_report import _write_metrics

    from neuface.dataset.filter import FilterRecord, FilterThresholds, write_manifest
    from neuface.report.plots import NO_CVD

    results = tmp_path / "mono_results"
    sheet = tmp_path / "mono.tsv"
    sheet.write_text("sequence\tview\tsplit\tpath\tdataset\n"
                     + "".join(f"{s}\tfront\tval\t{tmp_path}/videos/{s}.mp4\tvoxceleb2\n" for s in ("vox_a", "vox_b")))
    m = {"msi3d_l": 0.2, "msi3d_v": 0.3, "cvd": None, "nme": 2.5}
    for annotator in ("regress", "neuface"):
        for i, sequence in enumerate(("vox_a", "vox_b")):
            _write_metrics(results / "metrics", annotator, sequence, {**m, "nme": 2.0 + i})
    for annotator, vox_b in (("regress", ("rejected", ["NME 9.1% > 8%"])), ("neuface", ("accepted", []))):
        write_manifest([FilterRecord("vox_a", "val", annotator, "accepted"),
                        FilterRecord("vox_b", "val", annotator, *vox_b)],
                       results / "filter" / f"{annotator}.tsv", FilterThresholds(), annotator)
    _, model, _, embedding = tiny_flame_files(tmp_path / "model")
    cfg = yaml.safe_load(override.read_text())
    cfg.update({"samples": str(sheet), "results": str(results),
                "assets": {"flame_model": str(model), "landmark_embedding": str(embedding)}})
    cfg["fitting"]["annotators"] = ["regress", "neuface"]
    cfg["report"].update({"table2": ["regress", "neuface"], "table3": ["neuface"], "overlay_sequences": 0})
    config = tmp_path / "mono.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(str(results / "report/index.md"), "--configfile", str(config), "--cores", "1",
                     "--allowed-rules", "report")
    assert "rule report:" in proc.stdout + proc.stderr  # it ran, on the metrics written above
    report = results / "report"
    for name in ("table2.md", "table3.md", "cvd_per_view.png", "msi_distribution.png", "index.md"):
        assert (report / name).stat().st_size > 0, name
    assert Image.open(report / "cvd_per_view.png").text.get("Description") == NO_CVD
    assert "Description" not in Image.open(report / "msi_distribution.png").text  # a real figure
    assert f"cvd_per_view.png` (placeholder: {NO_CVD})" in (report / "index.md").read_text()
    table2 = (report / "table2.md").read_text()
    assert "VoxCeleb2 NME" in table2
    assert "regress 1/2 accepted (rejected: vox_b: NME 9.1% > 8%)" in table2, table2  # the filter note


@pytest.mark.parametrize("where, key, value, message", [
    ("settings", "n_pass", 3, "annotator 'neuface' (fitting.annotators): unknown annotator setting(s): n_pass"),
    ("common", "lr", "fast", "annotator 'regress' (fitting.annotators): annotator setting lr='fast'"),
    ("annotators", None, "nope", "annotator 'nope' (fitting.annotators): unknown annotator 'nope'"),
])
def test_dry_run_refuses_bad_annotator_settings(override, tmp_path, where, key, value, message):
    """A bad annotator setting fails `snakemake -n` when the workflow is parsed, naming annotator and key."""
    cfg = yaml.safe_load(override.read_text())
    if where == "settings":
        cfg["fitting"]["settings"]["neuface"] = {key: value}
    elif where == "common":
        cfg["fitting"]["common"][key] = value
    else:
        cfg["fitting"]["annotators"].append(value)
    config = tmp_path / "bad_annotator.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(config), "--cores", "1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out
    assert "Building DAG of jobs" not in out and "rule fit:" not in out  # refused before any job was planned


# ---- training targets (rules/train.smk)
def _train_sheet(tmp_path, carphone_path, n=6):
    sheet = tmp_path / "train.tsv"
    sheet.write_text("sequence\tview\tsplit\tpath\n" + "".join(
        f"clip{i:02d}\tfront\t{'train' if i % 3 else 'test'}\t{carphone_path}\n" for i in range(n)))
    return sheet


def _config(override, tmp_path, carphone_path, shard_size=0, **train):
    cfg = yaml.safe_load(override.read_text())
    cfg["samples"] = str(_train_sheet(tmp_path, carphone_path))
    cfg["train"] = {"motion_prior": {"subset": 2}, **train}
    if shard_size:
        cfg["scale"] = {"shard_size": shard_size}
    path = tmp_path / f"train_{shard_size}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_targets_plan_models_evaluations_and_tables(override, tmp_path, carphone_path):
    config = _config(override, tmp_path, carphone_path, regressor={"variants": ["2d", "3d", "3dexpr", "3dexprcanon"]},
                     motion_prior={"subset": 2, "val_fraction": 0.2})
    proc = snakemake("-n", "-p", "train_regressor", "motion_prior", "--cores", "1", "--configfile", str(config))
    jobs = _job_counts(proc.stdout)
    assert jobs["finetune_regressor"] == 4  # neuface 2d, 3d, 3dexpr, 3dexprcanon
    assert jobs["eval_regressor"] == 5  # original and the four
    assert jobs["train_motion_prior"] == jobs["eval_motion_prior"] == 3  # neuface, regress, neuface_subset2
    assert jobs["train_report_regressor"] == jobs["train_report_prior"] == 1
    assert "--no-3d" in proc.stdout and "--max-sequences 2" in proc.stdout
    assert proc.stdout.count("--identity-3d predicted") == 2  # 3dexpr and 3dexprcanon
    assert proc.stdout.count("--pose-3d canonical") == 1  # 3dexprcanon only
    assert proc.stdout.count("--val-fraction 0.2") == 3 and "--val-every" not in proc.stdout  # null: CLI default
    # each prior's held-out likelihood on its own annotator's eval split, FD against test_annotator's
    assert proc.stdout.count("--own-test") == 3 and "/dataset/regress/test.h5" in proc.stdout
    # `rule all` stays as it was unless train.in_all
    assert "finetune_regressor" not in _job_counts(snakemake("-n", "--configfile", str(config)).stdout)


def test_regressor_base_builtin_2d_is_pretrained_from_2d_and_is_the_original_row(override, tmp_path, carphone_path):
    config = _config(override, tmp_path, carphone_path,
                     regressor={"variants": ["3d"], "base": "builtin_2d", "base_prior_weight": 0.003})
    proc = snakemake("-n", "-p", "train_regressor", "--cores", "1", "--configfile", str(config))
    jobs = _job_counts(proc.stdout)
    assert jobs["pretrain_regressor_base"] == 1 and jobs["finetune_regressor"] == 1 and jobs["eval_regressor"] == 2
    assert "--param-weight 0 --prior-weight 0.003" in proc.stdout
    base = "train/base/builtin_2d.pt"
    finetune = [c for c in proc.stdout.splitlines() if "train regressor" in c]
    original = [c for c in proc.stdout.splitlines() if "eval-regressor" in c and "--label original" in c]
    assert len(finetune) == 1 and base in finetune[0] and "--encoder builtin" in finetune[0]
    assert len(original) == 1 and base in original[0]
    config = _config(override, tmp_path, carphone_path, regressor={"base": "deca"})
    proc = snakemake("-n", "train_regressor", "--configfile", str(config), check=False)
    assert proc.returncode != 0 and "base" in proc.stdout + proc.stderr  # schema: encoder | builtin_2d
    config = _config(override, tmp_path, carphone_path, regressor={"base": "builtin_2d", "base_prior_weight": -1})
    proc = snakemake("-n", "train_regressor", "--configfile", str(config), check=False)
    assert proc.returncode != 0 and "base_prior_weight" in proc.stdout + proc.stderr


def test_regressor_repeats_train_each_variant_with_further_seeds(override, tmp_path, carphone_path):
    config = _config(override, tmp_path, carphone_path, regressor={"variants": ["2d", "3dcanon"], "seed": 4,
                                                                   "repeats": 3})
    proc = snakemake("-n", "-p", "train_regressor", "--cores", "1", "--configfile", str(config))
    jobs = _job_counts(proc.stdout)
    assert jobs["finetune_regressor"] == 6 and jobs["eval_regressor"] == 7  # 2 variants x 3 seeds, and original
    finetune = [c for c in proc.stdout.splitlines() if "train regressor" in c]
    by_out = {c.split("--out ")[1].split()[0].rsplit("/", 1)[1]: c for c in finetune}
    assert sorted(by_out) == sorted(f"neuface_{v}{s}.pt" for v in ("2d", "3dcanon") for s in ("", "_seed5", "_seed6"))
    for name, seed in (("neuface_2d.pt", 4), ("neuface_3dcanon_seed5.pt", 5), ("neuface_2d_seed6.pt", 6)):
        assert f"--seed {seed} " in by_out[name] and by_out[name].count("--seed") == 1
    assert "--pose-3d canonical" in by_out["neuface_3dcanon_seed6.pt"] and "--no-3d" in by_out["neuface_2d_seed5.pt"]
    config = _config(override, tmp_path, carphone_path, regressor={"repeats": 0})
    proc = snakemake("-n", "train_regressor", "--configfile", str(config), check=False)
    assert proc.returncode != 0 and "repeats" in proc.stdout + proc.stderr


def test_training_targets_with_shards_wait_for_the_shard_markers(override, tmp_path, carphone_path):
    config = _config(override, tmp_path, carphone_path, shard_size=2, in_all=True)
    proc = snakemake("-n", "--configfile", str(config), "--cores", "1")
    jobs = _job_counts(proc.stdout)
    assert jobs["finetune_regressor"] == 2 and jobs["train_report_prior"] == 1 and "crops" not in jobs


def test_training_targets_name_a_missing_split_or_annotator(override, tmp_path, carphone_path):
    config = _config(override, tmp_path, carphone_path, eval_split="holdout")
    proc = snakemake("-n", "train_regressor", "--configfile", str(config), check=False)
    assert proc.returncode != 0 and "no sequence of split 'holdout'" in proc.stdout + proc.stderr
    config = _config(override, tmp_path, carphone_path, motion_prior={"annotators": ["flamefit", "emoca_fit"]})
    proc = snakemake("-n", "motion_prior", "--configfile", str(config), check=False)
    assert proc.returncode != 0 and "'emoca_fit'" in proc.stdout + proc.stderr
