"""Filter stage: every rejection reason, the accepted path, the manifest (one line per sheet sequence), NME."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuface.dataset.fake import synthetic_fit_arrays, write_fit_file
from neuface.dataset.filter import FilterThresholds, evaluate_fit, filter_fits, read_manifest, write_manifest
from neuface.dataset.schema import MANIFEST_COLUMNS
from neuface.errors import NeufaceError
from neuface.status import StageStatus

MY_COMMANDS = ("filter", "pack", "h5")


@pytest.fixture
def cli(monkeypatch):
    """``cli(*argv)`` -> exit code of ``neuface.cli.main`` with this stage's subcommands registered."""
    import neuface.cli as cli_mod

    mods = tuple(cli_mod.COMMAND_MODULES) + tuple(m for m in MY_COMMANDS if m not in cli_mod.COMMAND_MODULES)
    monkeypatch.setattr(cli_mod, "COMMAND_MODULES", mods)
    return lambda *argv: cli_mod.main([str(a) for a in argv])


def write_sheet(path: Path, sequences: dict[str, tuple[str, int]]) -> Path:
    """Sample sheet with ``{sequence: (split, n_views)}``."""
    lines = ["sequence\tview\tsplit\tpath"]
    for seq, (split, n_views) in sequences.items():
        views = ["front"] if n_views == 1 else [f"view{i}" for i in range(n_views)]
        lines += [f"{seq}\t{v}\t{split}\tvideos/{seq}_{v}.mp4" for v in views]
    path.write_text("\n".join(lines) + "\n")
    return path


def good(seed: int = 0, n_frames: int = 12, n_views: int = 1) -> dict[str, np.ndarray]:
    return synthetic_fit_arrays(n_frames, n_views, seed=seed, shape_norm=0.5, pixel_noise=1.0)


def case_fits(tmp_path: Path) -> dict[str, Path]:
    """One fit file per case; the expected reason fragment is the key."""
    d = tmp_path / "fits"
    cases: dict[str, Path] = {}

    cases["accepted"] = write_fit_file(d / "ok.h5", "ok", good(0))
    cases["multi"] = write_fit_file(d / "multi.h5", "multi", good(1, n_views=3), views=["a", "b", "c"])
    a = good(2)
    a["shape"] *= 3.0  # ||beta|| = 1.5
    cases["shape norm"] = write_fit_file(d / "bigshape.h5", "bigshape", a)
    a = good(3)
    a["detected"][:6] = False  # 50 % missing
    a["landmarks"][:6] = np.nan
    cases["missing detections"] = write_fit_file(d / "nodet.h5", "nodet", a)
    a = good(4)
    a["landmarks_pred"] += 30.0  # 30 px off with ~84 px eye distance
    cases["NME"] = write_fit_file(d / "badnme.h5", "badnme", a)
    a = good(5)
    a["expression"][3, 0, 7] = np.inf
    cases["non-finite values in expression"] = write_fit_file(d / "nonfinite.h5", "nonfinite", a)
    cases["upstream fit: optimisation diverged"] = write_fit_file(
        d / "failed.h5", "failed", None, status=StageStatus.failed("failed", "fit", "optimisation diverged"))
    a = good(6)
    a["pose"] = a["pose"][:, :, :6]
    cases["malformed fit"] = write_fit_file(d / "malformed.h5", "malformed", a, strict=False)
    return cases


def test_record_nme_matches_naive_loop(tmp_path):
    """The manifest NME is the mean over detected (frame, view) pairs in percent of sqrt(w h) of the detections'
    landmark box; nme_eye is the same normalised by the outer-eye-corner distance."""
    a = good(11, n_frames=6, n_views=2)
    a["detected"][1, 0] = a["detected"][4, 1] = False
    a["landmarks"][1, 0] = a["landmarks"][4, 1] = np.nan
    a["landmarks_pred"][0, 1] += 3.0
    rec = evaluate_fit(write_fit_file(tmp_path / "n.h5", "n", a, views=["a", "b"]), FilterThresholds())
    errs, errs_eye = [], []
    for t in range(6):
        for v in range(2):
            if not a["detected"][t, v]:
                continue
            gt, pr = a["landmarks"][t, v].astype(float), a["landmarks_pred"][t, v].astype(float)
            mean_err = sum(math.dist(pr[k], gt[k]) for k in range(68)) / 68
            w = max(p[0] for p in gt) - min(p[0] for p in gt)
            h = max(p[1] for p in gt) - min(p[1] for p in gt)
            errs.append(mean_err / math.sqrt(w * h) * 100)
            errs_eye.append(mean_err / math.dist(gt[36], gt[45]) * 100)
    assert rec.status == "accepted", rec.reasons
    assert rec.nme == pytest.approx(sum(errs) / len(errs), rel=1e-6)
    assert rec.nme_eye == pytest.approx(sum(errs_eye) / len(errs_eye), rel=1e-6)
    assert rec.nme < rec.nme_eye  # the template's box (120 px) is wider than its eye corners (84 px)
    assert rec.detected_frac == pytest.approx(10 / 12)


def test_each_reason_and_accepted(tmp_path):
    th = FilterThresholds()
    for expect, path in case_fits(tmp_path).items():
        rec = evaluate_fit(path, th, annotator="neuface")
        if expect in ("accepted", "multi"):
            assert rec.status == "accepted", (expect, rec.reasons)
            assert rec.reasons == []
            assert rec.shape_norm == pytest.approx(0.5, rel=1e-5)
            assert rec.detected_frac == 1.0
            assert 0.5 < rec.nme < 5.0 and 0.5 < rec.nme_eye < 5.0
        else:
            assert rec.status == "rejected", expect
            assert any(r.startswith(expect) for r in rec.reasons), (expect, rec.reasons)
    assert evaluate_fit(tmp_path / "fits" / "multi.h5", th).n_views == 3


def test_all_reasons_are_listed(tmp_path):
    a = good(7)
    a["shape"] *= 4.0
    a["detected"][:8] = False
    a["landmarks_pred"] += 40.0
    a["cam"][0, 0, 0] = np.nan
    rec = evaluate_fit(write_fit_file(tmp_path / "x.h5", "x", a), FilterThresholds())
    kinds = {r.split(" ")[0] for r in rec.reasons}
    assert {"shape", "missing", "NME", "non-finite"} <= kinds, rec.reasons


def test_thresholds_are_respected(tmp_path):
    a = good(8)
    a["shape"] *= 2.4  # norm 1.2
    path = write_fit_file(tmp_path / "s.h5", "s", a)
    assert evaluate_fit(path, FilterThresholds(max_shape_norm=1.0)).status == "rejected"
    assert evaluate_fit(path, FilterThresholds(max_shape_norm=1.5)).status == "accepted"
    assert evaluate_fit(path, FilterThresholds(max_nme=0.1)).status == "rejected"
    assert evaluate_fit(path, FilterThresholds(max_shape_norm=2, min_frames=13)).reasons[0].startswith("too few")


def test_nme_rule_uses_the_bounding_box_nme(tmp_path):
    """A turned head (eye corners close together in the image) is judged by its landmark box, not its eyes."""
    a = good(12)
    for arr in (a["landmarks"], a["landmarks_pred"]):  # eye corners 12 px apart instead of 84 (profile-like)
        arr[..., 36, 0] = arr[..., 45, 0] - 12.0
    a["landmarks_pred"] = a["landmarks"] + 3.0  # every point 4.2 px off: 3.5 % of the 120 px box, 35 % of 12 px
    path = write_fit_file(tmp_path / "turned.h5", "turned", a)
    rec = evaluate_fit(path, FilterThresholds())
    assert rec.nme_eye > 30.0 and rec.nme == pytest.approx(100 * 3.0 * math.sqrt(2) / 120.0, rel=0.05)
    assert rec.status == "accepted", rec.reasons
    assert evaluate_fit(path, FilterThresholds(max_nme=3.0)).reasons[0].startswith("NME 3.5")


def test_unreadable_and_wrong_annotator(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    rec = evaluate_fit(junk, FilterThresholds())
    assert rec.status == "rejected" and rec.reasons[0].startswith("unreadable fit file")
    path = write_fit_file(tmp_path / "r.h5", "r", good(9), annotator="regress")
    rec = evaluate_fit(path, FilterThresholds(), annotator="neuface")
    assert rec.status == "rejected" and rec.reasons[0].startswith("annotator mismatch")


def test_manifest_has_a_line_for_every_sheet_sequence(tmp_path, cli):
    cases = case_fits(tmp_path)
    seqs = {p.stem: ("train" if i % 2 else "val", 3 if p.stem == "multi" else 1) for i, p in enumerate(cases.values())}
    seqs["never_fitted"] = ("test", 1)
    sheet = write_sheet(tmp_path / "sheet.tsv", seqs)
    extra = write_fit_file(tmp_path / "fits" / "stray.h5", "stray", good(10))
    out = tmp_path / "filter" / "neuface.tsv"
    fit_list = tmp_path / "fits.txt"
    fit_list.write_text("\n".join(str(p) for p in list(cases.values())[4:]) + "\n")
    rc = cli("filter", "--fits", *list(cases.values())[:4], extra, "--fit-list", fit_list, "--sheet", sheet,
             "--annotator", "neuface", "--out", out, "--max-shape-norm", "1.0")
    assert rc == 0
    rows, meta = read_manifest(out)
    by_seq = {r["sequence"]: r for r in rows}
    assert set(by_seq) == set(seqs) | {"stray"}
    assert len(rows) == len(by_seq)
    assert meta["thresholds"]["max_shape_norm"] == 1.0 and meta["annotator"] == "neuface"
    assert by_seq["never_fitted"]["status"] == "rejected" and by_seq["never_fitted"]["reasons"] == "no fit output"
    assert by_seq["stray"]["reasons"] == "not in sample sheet"
    assert by_seq["ok"]["status"] == "accepted" and by_seq["ok"]["split"] == seqs["ok"][0]
    assert by_seq["multi"]["n_views"] == "3" and by_seq["ok"]["n_frames"] == "12"
    assert by_seq["failed"]["reasons"] == "upstream fit: optimisation diverged"
    assert Path(by_seq["ok"]["path"]) == cases["accepted"]
    header = [line for line in out.read_text().splitlines() if not line.startswith("#")][0]
    assert tuple(header.split("\t")) == MANIFEST_COLUMNS
    assert not list(out.parent.glob(".*"))  # no temporary left behind


def test_duplicate_fits_reject_both(tmp_path):
    p1 = write_fit_file(tmp_path / "a" / "s.h5", "s", good(0))
    p2 = write_fit_file(tmp_path / "b" / "s.h5", "s", good(1))
    recs = filter_fits([p1, p2], {"s": "train"}, "neuface")
    assert len(recs) == 1 and recs[0].status == "rejected" and "duplicate" in recs[0].reasons[0]


def test_manifest_round_trip_and_bad_manifest(tmp_path):
    recs = filter_fits([], {"a": "train", "b": "val"}, "neuface")
    path = write_manifest(recs, tmp_path / "m.tsv", FilterThresholds(max_nme=7.0), annotator="neuface")
    rows, meta = read_manifest(path)
    assert [r["sequence"] for r in rows] == ["a", "b"] and meta["thresholds"]["max_nme"] == 7.0
    bad = tmp_path / "bad.tsv"
    bad.write_text("sequence\tsplit\n")
    with pytest.raises(NeufaceError, match="not a filter manifest"):
        read_manifest(bad)
    old = tmp_path / "v1.tsv"  # v1: eye-corner nme, no nme_eye column
    old.write_text(path.read_text().replace("manifest v4", "manifest v1"))
    with pytest.raises(NeufaceError, match="another version.*re-run neuface filter"):
        read_manifest(old)
    fit = write_fit_file(tmp_path / "fits" / "a.h5", "a", good(3))
    row = read_manifest(write_manifest(filter_fits([fit], {"a": "train"}, "neuface"), tmp_path / "m2.tsv",
                                       FilterThresholds()))[0][0]
    rec = evaluate_fit(fit, FilterThresholds())
    assert float(row["nme"]) == pytest.approx(rec.nme, rel=1e-5) and float(row["nme_eye"]) == pytest.approx(
        rec.nme_eye, rel=1e-5)


def test_failed_fit_file_has_no_datasets(tmp_path):
    path = write_fit_file(tmp_path / "f.h5", "f", None, status=StageStatus.failed("f", "fit", "boom"))
    with h5py.File(path) as f:
        assert f.attrs["status"] == "failed" and "shape" not in f


def test_manifest_keeps_odd_reasons_on_one_line(tmp_path):
    path = write_fit_file(tmp_path / "q.h5", "q", None,
                          status=StageStatus.failed("q", "fit", 'crop "x";\tlost\nview'))
    recs = filter_fits([path], {"q": "test"}, "neuface")
    rows, _ = read_manifest(write_manifest(recs, tmp_path / "m.tsv", FilterThresholds()))
    assert len(rows) == 1 and rows[0]["reasons"] == 'upstream fit: crop "x", lost view'


def test_fit_dir_finds_the_sheet_sequences(tmp_path, cli):
    """--fit-dir looks up <sequence>.h5 for every sheet sequence; a missing one is 'no fit output'."""
    fits = tmp_path / "fits"
    write_fit_file(fits / "ok.h5", "ok", good(10))
    sheet = write_sheet(tmp_path / "sheet.tsv", {"ok": ("val", 1), "missing": ("val", 1)})
    out = tmp_path / "m.tsv"
    assert cli("filter", "--fit-dir", fits, "--sheet", sheet, "--annotator", "neuface", "--out", out) == 0
    by_seq = {r["sequence"]: r for r in read_manifest(out)[0]}
    assert by_seq["ok"]["status"] == "accepted"
    assert by_seq["missing"]["status"] == "rejected" and by_seq["missing"]["reasons"] == "no fit output"
