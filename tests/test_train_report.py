"""Table 4 / Table 5 analogues from evaluation JSONs (``neuface train-report``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from neuface.cli import main
from neuface.errors import NeufaceError
from neuface.report.train_tables import (
    build_train_tables,
    paired_change_ci,
    prior_rows,
    regressor_rows,
    seed_paired_change_ci,
    seed_summary,
)


def _regressor_eval(path, label, mean, lineage=None, real_nme=None):
    sequences = [{"sequence": "syn1", "n_frames": 10, "n_views": 1, "has_gt": True,
                  "mpve_aligned_mm": {"median": mean, "mean": mean, "std": 0.1}, "nme": 2.0, "nme_gt": 1.5}]
    if real_nme is not None:
        sequences.append({"sequence": "carphone", "n_frames": 10, "n_views": 1, "has_gt": False,
                          "mpve_aligned_mm": None, "nme": real_nme, "nme_gt": None})
    data = {"format": "neuface.eval.regressor", "format_version": 1, "label": label,
            "encoder": {"kind": "builtin", "weights": "w.pt", "sha256": "0" * 64, "encoder_id": "builtin:x",
                        "lineage": lineage},
            "split": "test", "sequences": sequences,
            "summary": {"n_sequences": len(sequences), "n_frames": 10 * len(sequences), "n_gt_sequences": 1,
                        "mpve_aligned_mm": {"median": mean - 0.05, "mean": mean, "std": 0.1},
                        "nme": {"mean": 2.0, "std": 0.1}, "nme_gt": {"mean": 1.5, "std": 0.1}}}
    path.write_text(json.dumps(data))
    return path


def _prior_eval(path, label, fd, apd, annotator, own=None):
    data = {"format": "neuface.eval.motion_prior", "format_version": 1, "label": label,
            "prior": {"path": "p.pt", "sha256": "0" * 64,
                      "lineage": {"datasets": [{"path": "d.h5", "annotator": annotator, "split": "train",
                                                "n_sequences_used": 5}]}},
            "fd": fd, "fd_train_vs_test": 0.5, "apd_cm": apd, "seconds": 10, "n_samples": 50, "fps": 25,
            "stable": True, "max_landmark_dev_m": 0.01, "one_step_nll": -3.0, "const_velocity_nll": -1.0,
            "n_test_pairs": 100, "own_test": own}
    path.write_text(json.dumps(data))
    return path


def test_table5_rows_relative_change_and_real_clip_note(tmp_path):
    lineage = {"datasets": [{"annotator": "neuface", "split": "train", "n_sequences": 20}],
               "settings": {"use_3d": True}}
    files = [_regressor_eval(tmp_path / "o.json", "original", 2.0, real_nme=12.0),
             _regressor_eval(tmp_path / "f2.json", "neuface_2d", 1.9, {**lineage, "settings": {"use_3d": False}},
                             real_nme=6.0),
             _regressor_eval(tmp_path / "f3.json", "neuface_3d", 1.5, lineage, real_nme=5.0),
             _regressor_eval(tmp_path / "fe.json", "neuface_3dexpr", 1.6,
                             {**lineage, "settings": {"use_3d": True, "identity_3d": "predicted"}}),
             _regressor_eval(tmp_path / "fc.json", "neuface_3dcanon", 1.4,
                             {**lineage, "settings": {"use_3d": True, "pose_3d": "canonical"}}),
             _regressor_eval(tmp_path / "fec.json", "neuface_3dexprcanon", 1.3,
                             {**lineage, "settings": {"use_3d": True, "identity_3d": "predicted",
                                                      "pose_3d": "canonical"}})]
    df = regressor_rows(files)
    assert list(df["encoder"]) == ["original", "neuface_2d", "neuface_3d", "neuface_3dexpr", "neuface_3dcanon",
                                   "neuface_3dexprcanon"]
    assert list(df["supervision"]) == ["–", "2D", "2D + 3D", "2D + 3D w/o identity", "2D + 3D w/o head pose",
                                       "2D + 3D w/o identity or head pose"]
    assert df["mpve_change_pct"].tolist() == pytest.approx([0.0, -5.0, -25.0, -20.0, -30.0, -35.0])
    assert df["trained_on"].iloc[2] == "neuface train (20 seq.)"
    # 3D rows against their 2D-only sibling (same dataset); one GT sequence: no interval
    assert df["vs_2d_pct"].tolist()[2:] == pytest.approx([100 * (v / 1.9 - 1) for v in (1.5, 1.6, 1.4, 1.3)])
    assert np.isnan(df["vs_2d_pct"].iloc[0]) and np.isnan(df["vs_2d_pct"].iloc[1]) and df["vs_2d"].iloc[1] == "–"
    assert np.isnan(df["vs_2d_ci_low"].iloc[2]) and df["vs_2d"].iloc[2].startswith("-21.05")
    assert "[" not in df["vs_2d"].iloc[2]
    paths = build_train_tables(files, [], tmp_path / "report")
    md = (tmp_path / "report/table5.md").read_text()
    assert "**1.300**" in md and "| neuface_3d |" in md and "carphone" in md and "12.000" in md
    assert {p.suffix for p in paths} == {".csv", ".md", ".tex"}
    tex = (tmp_path / "report/table5.tex").read_text()
    assert r"\textbf{1.300}" in tex and "neuface\\_3d" in tex
    assert pd.read_csv(tmp_path / "report/table5.csv")["mpve_mean"].tolist() == pytest.approx(
        [2.0, 1.9, 1.5, 1.6, 1.4, 1.3])
    assert not (tmp_path / "report/table4.md").exists()


def test_repeats_pair_with_the_same_seed_and_get_a_mean_over_seeds(tmp_path):
    lin = {"datasets": [{"annotator": "neuface", "split": "train", "n_sequences": 20}]}
    two, three = {**lin, "settings": {"use_3d": False}}, {**lin, "settings": {"use_3d": True}}
    spec = [("original", 2.0, None), ("neuface_2d", 1.0, two), ("neuface_2d_seed1", 1.2, two),
            ("neuface_3d", 0.9, three), ("neuface_3d_seed1", 1.26, three)]
    files = [_regressor_eval(tmp_path / f"{label}.json", label, mean, lineage) for label, mean, lineage in spec]
    df = regressor_rows(files)
    # each seed against the 2D-only fine-tune of the same seed: -10 % and +5 %
    assert df["vs_2d_pct"].tolist()[3:] == pytest.approx([-10.0, 5.0])
    summary = seed_summary(df).set_index("recipe")
    assert list(summary.index) == ["neuface_2d", "neuface_3d"]  # `original` has one seed: no row
    assert summary.loc["neuface_3d", "n_seeds"] == 2
    assert summary.loc["neuface_3d", "mpve_mean"] == pytest.approx(1.08)
    assert summary.loc["neuface_3d", "mpve_seed_std"] == pytest.approx(np.std([0.9, 1.26], ddof=1))
    assert (summary.loc["neuface_3d", "mpve_min"], summary.loc["neuface_3d", "mpve_max"]) == (0.9, 1.26)
    assert summary.loc["neuface_3d", "vs_2d_pct"] == pytest.approx(-2.5)
    assert summary.loc["neuface_3d", "mpve_change_pct"] == pytest.approx(-46.0)
    assert math.isnan(summary.loc["neuface_2d", "vs_2d_pct"])
    build_train_tables(files, [], tmp_path / "report")
    md = (tmp_path / "report/table5.md").read_text()
    assert "Mean over training seeds" in md and "| neuface_3d | 2 | 1.080 |" in md and "| -2.500 |" in md
    # without repeats there is no seed table
    build_train_tables(files[:2] + files[3:4], [], tmp_path / "single")
    assert "Mean over training seeds" not in (tmp_path / "single/table5.md").read_text()


def test_paired_change_ci_cases():
    base = {"a": (1.0, 10), "b": (2.0, 30)}
    assert paired_change_ci(base, base) == (0.0, 0.0)
    lo, hi = paired_change_ci({k: (m * 1.1, n) for k, (m, n) in base.items()}, base)
    assert (lo, hi) == pytest.approx((10.0, 10.0))
    # +10 % on one sequence, -10 % on the other (equal weights): draws give +10, 0 or -10
    even = {"a": (1.0, 10), "b": (1.0, 10)}
    lo, hi = paired_change_ci({"a": (1.1, 10), "b": (0.9, 10)}, even)
    assert (lo, hi) == pytest.approx((-10.0, 10.0))
    assert all(math.isnan(x) for x in paired_change_ci({"a": (1.0, 10)}, base))  # fewer than 2 shared sequences
    assert paired_change_ci({**base, "c": (5.0, 10)}, base) == (0.0, 0.0)  # unshared sequences are left out


def _naive_seed_paired_ci(pairs, n_boot, level=0.95, seed=0):
    """Reference loop for seed_paired_change_ci (same random draws, one draw and one seed at a time)."""
    shared = sorted(set.intersection(*(set(m) & set(b) for m, b in pairs)))
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, len(pairs), size=(n_boot, len(pairs)))
    seqs = rng.integers(0, len(shared), size=(n_boot, len(shared)))
    values = []
    for d in range(n_boot):
        changes = []
        for s in seeds[d]:
            model, base = pairs[s]
            keys = [shared[q] for q in seqs[d]]
            pooled_m = sum(model[k][0] * model[k][1] for k in keys) / sum(model[k][1] for k in keys)
            pooled_b = sum(base[k][0] * base[k][1] for k in keys) / sum(base[k][1] for k in keys)
            changes.append(100.0 * (pooled_m / pooled_b - 1.0))
        values.append(sum(changes) / len(changes))
    tail = 100.0 * (1.0 - level) / 2.0
    return tuple(np.percentile(values, [tail, 100.0 - tail]))


def test_seed_paired_change_ci_matches_a_naive_loop_and_its_cases():
    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(4):
        base = {f"s{i}": (float(rng.uniform(0.8, 1.4)), int(rng.integers(10, 80))) for i in range(7)}
        model = {k: (m * float(rng.uniform(0.9, 1.08)), n) for k, (m, n) in base.items()}
        model["only_model"] = (9.0, 10)  # unshared sequences are left out
        pairs.append((model, base))
    assert seed_paired_change_ci(pairs, n_boot=300) == pytest.approx(_naive_seed_paired_ci(pairs, 300))
    base = {"a": (1.0, 10), "b": (2.0, 30)}
    assert seed_paired_change_ci([(base, base), (base, base)]) == (0.0, 0.0)
    scaled = {k: (m * 0.9, n) for k, (m, n) in base.items()}
    assert seed_paired_change_ci([(scaled, base)] * 3) == pytest.approx((-10.0, -10.0))
    # one seed -10 %, the other +10 % on every sequence: the seed draw alone spans [-10, +10]
    up = {k: (m * 1.1, n) for k, (m, n) in base.items()}
    lo, hi = seed_paired_change_ci([(scaled, base), (up, base)])
    assert (lo, hi) == pytest.approx((-10.0, 10.0))
    # a per-sequence interval of one seed cannot see that spread; this one widens with it
    narrow = seed_paired_change_ci([(scaled, base), ({k: (m * 0.92, n) for k, (m, n) in base.items()}, base)])
    assert narrow[1] - narrow[0] < hi - lo
    assert all(math.isnan(x) for x in seed_paired_change_ci([(scaled, base)]))  # one seed
    assert all(math.isnan(x) for x in seed_paired_change_ci([({"a": (1.0, 1)}, base), (base, base)]))


def _seq_eval(path, label, per_seq, lineage):
    """An eval JSON with several GT sequences (sequence -> mean MPVE), 10 frames x 1 view each."""
    seqs = [{"sequence": k, "status": "ok", "n_frames": 10, "n_views": 1, "has_gt": True,
             "mpve_aligned_mm": {"mean": v}, "nme": 2.0} for k, v in per_seq.items()]
    mean = float(np.mean(list(per_seq.values())))
    data = {"format": "neuface.eval.regressor", "label": label, "encoder": {"lineage": lineage}, "sequences": seqs,
            "summary": {"n_sequences": len(seqs), "n_frames": 10 * len(seqs),
                        "mpve_aligned_mm": {"median": mean, "mean": mean, "std": 0.1}}}
    path.write_text(json.dumps(data))
    return path


def test_seed_table_has_an_interval_over_seeds_and_the_seeds_won(tmp_path):
    lin = {"datasets": [{"annotator": "neuface", "split": "train", "n_sequences": 20}]}
    two, three = {**lin, "settings": {"use_3d": False}}, {**lin, "settings": {"use_3d": True}}
    base = {f"s{i}": 1.0 + 0.1 * i for i in range(5)}
    files = []
    for seed, (f2d, f3d) in enumerate([(1.0, 0.95), (1.02, 0.99), (0.98, 1.0)]):
        suffix = "" if seed == 0 else f"_seed{seed}"
        files.append(_seq_eval(tmp_path / f"2d{seed}.json", f"neuface_2d{suffix}",
                               {k: v * f2d for k, v in base.items()}, two))
        files.append(_seq_eval(tmp_path / f"3d{seed}.json", f"neuface_3d{suffix}",
                               {k: v * f3d for k, v in base.items()}, three))
    df = regressor_rows(files)
    summary = seed_summary(df).set_index("recipe")
    per_seed = [100 * (0.95 / 1.0 - 1), 100 * (0.99 / 1.02 - 1), 100 * (1.0 / 0.98 - 1)]
    row = summary.loc["neuface_3d"]
    assert row["vs_2d_pct"] == pytest.approx(np.mean(per_seed))
    assert row["vs_2d_better"] == "2/3"
    # uniform per-seed changes: the interval is that of the seed draw alone, inside [min, max] of the seeds
    assert min(per_seed) - 1e-9 <= row["vs_2d_ci_low"] < row["vs_2d_pct"] < row["vs_2d_ci_high"] <= max(per_seed) + 1e-9
    assert summary.loc["neuface_2d", "vs_2d_better"] == "–" and math.isnan(summary.loc["neuface_2d", "vs_2d_ci_low"])
    build_train_tables(files, [], tmp_path / "report")
    md = (tmp_path / "report/table5.md").read_text()
    assert row["vs_2d_sequences_better"] == "5/5"
    assert f"| {row['vs_2d_pct']:.3f} [{row['vs_2d_ci_low']:.3f}, {row['vs_2d_ci_high']:.3f}] | 2/3 | 5/5 |" in md
    seeds_csv = pd.read_csv(tmp_path / "report/table5_seeds.csv").set_index("recipe")
    assert seeds_csv.loc["neuface_3d", "vs_2d_ci_low"] == pytest.approx(row["vs_2d_ci_low"], rel=1e-5)
    assert "per_sequence" not in pd.read_csv(tmp_path / "report/table5.csv").columns
    # one sequence where the 3D row is worse in every seed: the sequence count sees it, each sequence one vote
    worse = []
    for seed in range(2):
        suffix = "" if seed == 0 else f"_seed{seed}"
        worse.append(_seq_eval(tmp_path / f"w2d{seed}.json", f"neuface_2d{suffix}", base, two))
        worse.append(_seq_eval(tmp_path / f"w3d{seed}.json", f"neuface_3d{suffix}",
                               {k: v * (1.3 if k == "s0" else 0.99) for k, v in base.items()}, three))
    assert seed_summary(regressor_rows(worse)).set_index("recipe").loc["neuface_3d", "vs_2d_sequences_better"] == "4/5"
    # a rebuild without repeats removes the seed table of the earlier run
    build_train_tables(files[:2], [], tmp_path / "report")
    assert not (tmp_path / "report/table5_seeds.csv").exists()


def test_table5_has_the_error_parts_and_a_paired_interval(tmp_path):
    def ev(path, label, scale, lineage=None):
        seqs = [{"sequence": f"s{i}", "status": "ok", "n_frames": 10, "n_views": 1 + i % 2, "has_gt": True,
                 "mpve_aligned_mm": {"median": m, "mean": m, "std": 0.1}, "nme": 2.0, "nme_gt": 1.5}
                for i, m in enumerate(np.array([1.0, 1.2, 0.8, 1.1]) * scale)]
        data = {"format": "neuface.eval.regressor", "format_version": 1, "label": label,
                "encoder": {"kind": "builtin", "weights": "w.pt", "sha256": "0" * 64, "encoder_id": "b:x",
                            "lineage": lineage}, "split": "test", "sequences": seqs,
                "summary": {"n_sequences": 4, "n_frames": 40, "n_gt_sequences": 4,
                            "mpve_aligned_mm": {"median": scale, "mean": scale, "std": 0.1},
                            "mpve_identity_mm": {"median": 0.4, "mean": 0.4 * scale, "std": 0.1},
                            "mpve_expression_mm": {"median": 0.8, "mean": 0.8 * scale, "std": 0.1},
                            "nme": {"mean": 2.0, "std": 0.1}, "nme_gt": {"mean": 1.5, "std": 0.1}}}
        path.write_text(json.dumps(data))
        return path

    lineage = {"datasets": [{"annotator": "neuface", "split": "train", "n_sequences": 20}],
               "settings": {"use_3d": True}}
    files = [ev(tmp_path / "o.json", "original", 1.0), ev(tmp_path / "f.json", "ft", 0.9, lineage)]
    df = regressor_rows(files)
    assert df["identity_mean"].tolist() == pytest.approx([0.4, 0.36])
    assert df["expression_mean"].tolist() == pytest.approx([0.8, 0.72])
    assert df["change_ci_low"].iloc[1] == pytest.approx(-10.0) and df["change_ci_high"].iloc[1] == pytest.approx(-10.0)
    assert df["change_ci"].tolist() == ["–", "[-10.000, -10.000]"]
    build_train_tables(files, [], tmp_path / "r")
    md = (tmp_path / "r/table5.md").read_text()
    assert "identity part (mm)" in md and "expression part (mm)" in md and "[-10.000, -10.000]" in md
    assert "**0.360**" in md and "**0.720**" in md


def test_table4_best_fd_lowest_apd_highest(tmp_path):
    own = {"paths": ["t.h5"], "one_step_nll": -2.5, "const_velocity_nll": -0.75, "n_test_pairs": 10}
    files = [_prior_eval(tmp_path / "a.json", "neuface", 1.0, 0.5, "neuface", own),
             _prior_eval(tmp_path / "b.json", "regress", 3.0, 0.9, "regress")]
    df = prior_rows(files)
    assert df["own_nll"].iloc[0] == -2.5 and df["own_const_velocity_nll"].iloc[0] == -0.75
    assert np.isnan(df["own_nll"].iloc[1])  # an evaluation without --own-test
    assert df["fd"].tolist() == [1.0, 3.0] and df["trained_on"].tolist() == ["neuface train (5 seq.)",
                                                                             "regress train (5 seq.)"]
    assert main(["train-report", "--prior-evals", *map(str, files), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r/table4.md").read_text()
    assert "**1.000**" in md and "**0.900**" in md and "3.000" in md
    assert md.count("| yes |") == 2  # stable
    assert "1-step NLL, own kind" in md and "-2.500" in md and "-0.750" in md


def test_wrong_format_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "neuface.metrics"}))
    with pytest.raises(NeufaceError, match="expected 'neuface.eval.regressor'"):
        regressor_rows([bad])
    assert main(["train-report", "--prior-evals", str(bad), "--out", str(tmp_path)]) == 2
    with pytest.raises(NeufaceError, match="give --regressor-evals"):
        build_train_tables([], [], tmp_path)
