"""Report: tables from metric JSONs (CSV / Markdown / LaTeX numbers), plots, overlay camera and videos."""

from __future__ import annotations

import json

import av
import numpy as np
import pandas as pd
import pytest
import torch
from test_metrics import _cli, tiny_flame, tiny_flame_files
from test_noise import make_frames

from neuface.errors import NeufaceError
from neuface.geometry.camera import weak_perspective_project
from neuface.geometry.crop import crop_ndc_to_pixels, crop_transform
from neuface.metrics import write_fit_file
from neuface.report import aggregate, build_report, caption_path, format_value, load_metrics
from neuface.report.overlay import FrameCamera, render_overlay, tile_transform
from neuface.status import StageStatus


def _write_metrics(root, annotator, sequence, metrics, status="ok", per_view_cvd=None, per_view=None, version=2):
    path = root / annotator / f"{sequence}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": "neuface.metrics", "format_version": version, "annotator": annotator, "sequence": sequence,
            "status": status, "reason": "" if status == "ok" else "x"}
    if status == "ok":
        data["metrics"] = metrics
        data["per_view"] = {**({"cvd": per_view_cvd} if per_view_cvd else {}), **(per_view or {})}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def metric_files(tmp_path):
    root = tmp_path / "metrics"
    m = {"msi3d_l": 0.2, "msi3d_v": 0.3, "cvd": 0.1, "nme": 2.5, "nme_eye": 5.5, "nme_gt": None, "nme_gt_eye": None,
         "mpve_aligned": None, "mpve": None}
    paths = [
        _write_metrics(root, "neuface", "mead_a", m, per_view_cvd={"front": 1.0, "left_60": 3.0},
                       per_view={"nme": {"front": 2.0, "left_60": 3.0}, "nme_eye": {"front": 4.0, "left_60": 7.0}}),
        _write_metrics(root, "neuface", "mead_b", {**m, "msi3d_l": 0.4, "cvd": 0.3},
                       per_view_cvd={"front": 2.0, "left_60": 5.0},
                       per_view={"nme": {"front": 3.0, "left_60": None}, "nme_eye": {"front": 5.0, "left_60": 6.0}}),
        _write_metrics(root, "regress", "mead_a", {**m, "msi3d_l": 0.01, "cvd": 0.2, "nme": 4.6, "nme_eye": 9.1},
                       per_view_cvd={"front": 4.0, "left_60": 9.0}),
        _write_metrics(root, "regress", "mead_b", {}, status="failed"),
        _write_metrics(root, "neuface", "vox_a", {**m, "cvd": None, "nme": 2.19, "mpve_aligned": 1.5, "mpve": 4.0},
                       per_view={"mpve_aligned": {"mono": 1.5}, "mpve": {"mono": 4.0}}),
        _write_metrics(root, "regress", "vox_a", {**m, "cvd": None, "nme": 4.78, "mpve_aligned": 3.25, "mpve": 3.0}),
    ]
    sheet = pd.DataFrame({"sequence": ["mead_a", "mead_b", "vox_a"], "dataset": ["mead", "mead", "voxceleb2"],
                          "split": ["val", "val", "val"], "view": ["front"] * 3})
    return paths, sheet


def test_tables_have_the_right_numbers(tmp_path, metric_files):
    paths, sheet = metric_files
    df = load_metrics(paths, sheet)
    long = aggregate(df)
    row = long[(long.annotator == "neuface") & (long.dataset == "mead") & (long.metric == "msi3d_l")].iloc[0]
    assert row["mean"] == pytest.approx(0.3) and row["n"] == 2
    reg = long[(long.annotator == "regress") & (long.dataset == "mead") & (long.metric == "cvd")].iloc[0]
    assert reg["mean"] == pytest.approx(0.2) and reg["n_ok"] == 1 and reg["n_failed"] == 1
    out = tmp_path / "report"
    made = build_report(paths, out, sheet=sheet, annotators=["neuface", "regress"], variants=["neuface"],
                        labels={"neuface": "NeuFace_D"})
    wide = pd.read_csv(out / "table2.csv")
    assert list(wide["annotator"]) == ["NeuFace_D", "regress"]
    assert wide["mead/cvd"].tolist() == pytest.approx([0.2, 0.2])
    assert wide["mead/msi3d_l"].tolist() == pytest.approx([0.3, 0.01])
    assert wide["voxceleb2/mpve_aligned"].tolist() == pytest.approx([1.5, 3.25])
    assert wide["voxceleb2/mpve"].tolist() == pytest.approx([4.0, 3.0])
    assert wide["mead/nme"].tolist() == pytest.approx([2.5, 4.6])
    assert wide["mead/nme_eye"].tolist() == pytest.approx([5.5, 9.1])
    assert "voxceleb2/cvd" not in wide.columns and "mead/mpve" not in wide.columns  # no values: no column
    # headline columns first: bbox NME then eye NME, aligned MPVE then unaligned MPVE
    assert [c for c in wide.columns if c.startswith("voxceleb2/")][-4:] == [
        "voxceleb2/nme", "voxceleb2/nme_eye", "voxceleb2/mpve_aligned", "voxceleb2/mpve"]
    md = (out / "table2.md").read_text()
    assert "**0.300**" in md and "| regress |" in md and "**2.190**" in md and "4.780" in md
    assert "regress/MEAD: 1 ok, 1 failed" in md
    assert "**0.300** ± 0.100 |" in md  # mean ± std over the two MEAD sequences; one sequence: no ±
    assert "| 0.010 |" in md
    header = md.splitlines()[2]
    assert header.index("VoxCeleb2 NME ↓") < header.index("VoxCeleb2 NME-eye ↓")
    assert header.index("VoxCeleb2 MPVE ↓") < header.index("VoxCeleb2 MPVE-unaligned ↓")
    tex = (out / "table2.tex").read_text()
    assert r"\multicolumn{5}{c}{MEAD}" in tex and r"NeuFace\_D" in tex and r"\textbf{0.300}" in tex
    assert r"\textbf{1.500}" in tex and "3.250" in tex and r"\toprule" in tex
    assert r"\textbf{0.300} $\pm$ 0.100" in tex
    assert r"\textbf{3.000}" in tex  # unaligned MPVE: regress is best there
    pv = pd.read_csv(out / "per_view.csv")
    assert list(pv.columns) == ["annotator", "dataset", "view", "metric", "mean", "std", "median", "n"]

    def pv_row(ann, ds, view, metric):
        sel = pv[(pv.annotator == ann) & (pv.dataset == ds) & (pv.view == view) & (pv.metric == metric)]
        assert len(sel) == 1, (ann, ds, view, metric)
        return sel.iloc[0]

    assert pv_row("neuface", "mead", "front", "nme")["mean"] == pytest.approx(2.5)
    assert pv_row("neuface", "mead", "left_60", "nme")[["mean", "n"]].tolist() == pytest.approx([3.0, 1])
    assert pv_row("neuface", "mead", "left_60", "nme_eye")["mean"] == pytest.approx(6.5)
    assert pv_row("neuface", "mead", "left_60", "cvd")["mean"] == pytest.approx(4.0)
    assert pv_row("neuface", "voxceleb2", "mono", "mpve_aligned")["mean"] == pytest.approx(1.5)
    assert "per_view" not in pd.read_csv(out / "sequences.csv").columns
    t3 = pd.read_csv(out / "table3.csv")
    assert list(t3["annotator"]) == ["NeuFace_D"]
    assert "**" not in (out / "table3.md").read_text().split("Sequences")[0]  # one row: nothing to bold
    for key in ("cvd_per_view", "msi_distribution"):
        assert made[key].is_file() and made[key].read_bytes()[:4] == b"\x89PNG"
    assert (out / "captions" / "table2.rst").is_file() and (out / "index.md").is_file()
    assert caption_path("overlay").is_file()
    with pytest.raises(NeufaceError, match="no sequence of split"):
        build_report(paths, out, sheet=sheet, split="test")


def test_version_1_metrics_keep_their_meaning(tmp_path):
    """v1 JSONs had eye-corner NMEs under nme / nme_gt: they are read as nme_eye / nme_gt_eye, not as the
    bounding-box headline; v1 MPVE was the unaligned one."""
    v1 = _write_metrics(tmp_path, "neuface", "old", {"msi3d_l": 0.2, "nme": 7.0, "nme_gt": 3.0, "mpve": 2.0},
                        per_view={"nme": {"front": 7.0}}, version=1)
    v2 = _write_metrics(tmp_path, "regress", "new", {"nme": 1.0, "nme_eye": 2.0, "mpve_aligned": 0.5, "mpve": 2.5})
    df = load_metrics([v1, v2]).set_index("annotator")
    assert df.loc["neuface", "nme_eye"] == 7.0 and df.loc["neuface", "nme_gt_eye"] == 3.0
    assert np.isnan(df.loc["neuface", "nme"]) and np.isnan(df.loc["neuface", "nme_gt"])
    assert df.loc["neuface", "mpve"] == 2.0 and np.isnan(df.loc["neuface", "mpve_aligned"])
    assert df.loc["neuface", "per_view"] == {"nme_eye": {"front": 7.0}}
    assert df.loc["regress", "nme"] == 1.0 and df.loc["regress", "nme_eye"] == 2.0
    assert df.loc["regress", "mpve_aligned"] == 0.5


def test_format_value():
    assert format_value(0.2064) == "0.206" and format_value(float("nan")) == "–"
    assert format_value(1e6) == "1e+06" and format_value(0.0004) == "0.0004" and format_value(0.0) == "0.000"


def test_frame_camera_matches_crop_ndc_chain():
    torch.manual_seed(0)
    b = 4
    points = torch.randn(b, 30, 3, dtype=torch.float64) * 0.1
    cam = torch.tensor([[8.0, 0.01, -0.02]], dtype=torch.float64).expand(b, -1)
    T = crop_transform(torch.rand(b, 2, dtype=torch.float64) * 100 + 50,
                       torch.rand(b, dtype=torch.float64) * 50 + 80, out_size=224)
    frame_px = crop_ndc_to_pixels(weak_perspective_project(points, cam)[..., :2], T)
    g = 0.375
    screen = FrameCamera(cam, tile_transform(T, g), 224).to_screen(points)
    torch.testing.assert_close(screen[..., :2], g * (frame_px + 0.5) - 0.5)
    torch.testing.assert_close(FrameCamera(cam, tile_transform(T, 1.0)).to_screen(points)[..., :2], frame_px)
    # equivalent weak perspective in frame pixels: scale s * S / (2 k) pixels per metre
    k = T[:, 0, 0]
    dx = frame_px[:, 1, 0] - frame_px[:, 0, 0]
    torch.testing.assert_close(dx, cam[:, 0] * 224 / (2 * k) * (points[:, 1, 0] - points[:, 0, 0]))


def _overlay_fit(tmp_path, views, n_f=5, size=(96, 128), detected=None):
    rng = np.random.default_rng(0)
    n_v = len(views)
    center = torch.tensor([[64.0, 48.0]], dtype=torch.float64).expand(n_f * n_v, -1)
    T = crop_transform(center, torch.full((n_f * n_v,), 80.0, dtype=torch.float64)).reshape(n_f, n_v, 3, 3)
    fit = write_fit_file(
        tmp_path / "fit.h5", sequence="seq", annotator="neuface", views=views, shape=np.zeros(100),
        expression=rng.normal(size=(n_f, n_v, 50)) * 0.1, global_pose=np.zeros((n_f, n_v, 3)),
        pose=np.zeros((n_f, n_v, 12)), cam=np.tile([8.0, 0.0, 0.0], (n_f, n_v, 1)), crop_transforms=T.numpy(),
        landmarks=np.full((n_f, n_v, 68, 2), 60.0), landmarks_pred=np.full((n_f, n_v, 68, 2), 40.0),
        detected=np.ones((n_f, n_v), bool) if detected is None else detected,
        losses={"total": np.linspace(2, 1, 10), "l2d": np.linspace(1, .5, 10)})
    frames = make_frames(tmp_path / "frames.h5", views, n=n_f + 2, size=size)
    return fit, frames


def test_overlay_render_places_the_mesh(tmp_path):
    from neuface.flame import FlameLayer

    fit, frames = _overlay_fit(tmp_path, ["front"])
    flame = FlameLayer(*tiny_flame(), n_shape=100, n_exp=50)
    video = render_overlay(fit, frames, flame, tile=64)
    assert video.shape == (5, 48, 64, 3)  # 96x128 frames at 0.5, fit has 5 of the 7 frames
    # the mesh (radius ~0.1 m, s = 8, crop of 80 px at (64, 48)) covers the tile centre: blue-ish there
    centre = video[0, 24, 32].astype(int)
    assert centre[2] > centre[0]
    corner = video[0, 2, 2].astype(int)
    assert corner[2] < 10  # background (no blue channel in the test frames)


def test_overlay_marks_frames_without_a_detection(tmp_path):
    from neuface.flame import FlameLayer
    from neuface.report.overlay import NO_DETECTION_COLOR, mark_frames

    detected = np.ones((5, 2), bool)
    detected[2, 1] = False  # view 1 of frame 2: no face found
    detected[4, :] = False
    fit, frames = _overlay_fit(tmp_path, ["front", "left_60"], detected=detected)
    flame = FlameLayer(*tiny_flame(), n_shape=100, n_exp=50)
    video = render_overlay(fit, frames, flame, tile=64)
    assert video.shape == (5, 48, 128, 3)  # two 48x64 tiles side by side
    magenta = np.array(NO_DETECTION_COLOR) * 255

    def framed(frame, tile):
        edge = video[frame, :, tile * 64: (tile + 1) * 64][[0, -1]].reshape(-1, 3).astype(float)
        return bool(np.all(np.abs(edge - magenta) < 40))

    assert [framed(f, 0) for f in range(5)] == [False, False, False, False, True]
    assert [framed(f, 1) for f in range(5)] == [False, False, True, False, True]
    img = torch.zeros(3, 3, 10, 12)
    out = mark_frames(img, torch.tensor([False, True, False]), width=2)
    assert out[0].abs().sum() == 0 and out[2].abs().sum() == 0 and torch.equal(img, torch.zeros(3, 3, 10, 12))
    assert (out[1, :, :2] == torch.tensor(NO_DETECTION_COLOR)[:, None, None]).all()
    assert out[1, :, 2:-2, 2:-2].abs().sum() == 0


def test_render_overlay_command(tmp_path):
    from neuface.cli import main

    def _render(*argv) -> int:
        return main(["render", "overlay", *map(str, argv)])

    detected = np.ones((4, 1), bool)
    detected[1] = False
    fit, frames = _overlay_fit(tmp_path, ["front"], n_f=4, detected=detected)
    flame_args = tiny_flame_files(tmp_path / "model")
    out = tmp_path / "ov" / "seq.mp4"
    assert _render("--fit", fit, "--frames", frames, *flame_args, "--out", out,
                "--size", 64, "--max-frames", 3) == 0
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 3 and decoded[0].shape == (48, 64, 3)
    assert decoded[1][0, 32, 0] > 200 and decoded[1][0, 32, 1] < 60  # magenta top edge on the undetected frame
    assert _render("--fit", fit, "--frames", frames, *flame_args, "--out", tmp_path / "all.mp4",
                "--size", 64) == 0
    with av.open(str(tmp_path / "all.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    failed = write_fit_file(tmp_path / "bad.h5", sequence="bad", annotator="neuface", views=["front"],
                            shape=np.zeros(100), expression=np.zeros((2, 1, 50)), global_pose=np.zeros((2, 1, 3)),
                            pose=np.zeros((2, 1, 12)), status=StageStatus.failed("bad", "fit", "diverged"))
    assert _render("--fit", failed, "--frames", frames, *flame_args, "--out", tmp_path / "x.mp4") == 2
    assert not (tmp_path / "x.mp4").exists()


def test_report_cli_with_overlay_and_losses(tmp_path, metric_files):
    paths, sheet = metric_files
    fit, frames = _overlay_fit(tmp_path, ["front", "left_60"], n_f=4)
    sheet_path = tmp_path / "sheet.tsv"
    sheet.assign(path="x.mp4").to_csv(sheet_path, sep="\t", index=False)
    out = tmp_path / "report"
    flame_args = tiny_flame_files(tmp_path / "model")
    rc = _cli("report", "--metrics", *paths, "--sheet", sheet_path, "--out", out, "--fits", fit,
              "--overlay-fit", fit, "--overlay-frames", frames, *flame_args, "--overlay-size", 48,
              "--label", "neuface=NeuFace")
    assert rc == 0
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    video = out / "overlays" / "neuface__seq.mp4"
    with av.open(str(video)) as container:
        n = sum(1 for _ in container.decode(video=0))
    assert n == 4
    assert "NeuFace" in (out / "table2.md").read_text()
    failed = write_fit_file(tmp_path / "bad.h5", sequence="bad", annotator="neuface", views=["front"],
                            shape=np.zeros(100), expression=np.zeros((2, 1, 50)), global_pose=np.zeros((2, 1, 3)),
                            pose=np.zeros((2, 1, 12)), status=StageStatus.failed("bad", "fit", "diverged"))
    with pytest.raises(NeufaceError, match="fit failed"):
        render_overlay(failed, frames, None)


M_OK = {"msi3d_l": 0.2, "msi3d_v": 0.3, "cvd": None, "nme": 2.5}


def _composition(root, case):
    """Metric files of one sheet composition: monocular only, one multi-view sequence, every fit failed."""
    if case == "mono":
        return [_write_metrics(root, a, s, {**M_OK, "msi3d_l": 0.1 * (i + 1)})
                for a in ("neuface", "regress") for i, s in enumerate(("vox_a", "vox_b"))]
    if case == "one":
        return [_write_metrics(root, "neuface", "mead_a", {**M_OK, "cvd": 2.0},
                               per_view_cvd={"front": 1.0, "left_60": 3.0})]
    return [_write_metrics(root, a, s, {}, status="failed")
            for a in ("neuface", "regress") for s in ("mead_a", "vox_a")]


@pytest.mark.parametrize("case, cvd_reason, msi_reason", [
    ("mono", "no multi-view sequences: CVD not applicable", None),
    ("one", None, None),
    ("failed", "no successful fit: CVD not available", "no successful fit: MSI not available"),
])
def test_report_for_every_sheet_composition(tmp_path, case, cvd_reason, msi_reason):
    """Every figure the workflow declares exists for any composition; one without data is a placeholder that
    says why (in the PNG's Description and in index.md)."""
    from neuface.report.plots import placeholder_reason, plot_cvd_per_view, plot_msi_distribution

    paths = _composition(tmp_path / "metrics", case)
    df = load_metrics(paths)
    cvd = plot_cvd_per_view(df, tmp_path / "cvd.png")
    msi = plot_msi_distribution(df, tmp_path / "msi.png")
    assert cvd.read_bytes()[:4] == msi.read_bytes()[:4] == b"\x89PNG"
    assert placeholder_reason(cvd) == cvd_reason and placeholder_reason(msi) == msi_reason
    made = build_report(paths, tmp_path / "report")
    for key, reason in (("cvd_per_view", cvd_reason), ("msi_distribution", msi_reason)):
        assert made[key] == tmp_path / "report" / f"{key}.png" and placeholder_reason(made[key]) == reason
    index = (tmp_path / "report" / "index.md").read_text()
    assert index.count("(placeholder: ") == (cvd_reason is not None) + (msi_reason is not None)
    if cvd_reason:
        assert f"- cvd_per_view: `cvd_per_view.png` (placeholder: {cvd_reason})" in index
    for stem in ("table2", "table3"):
        assert (tmp_path / "report" / f"{stem}.md").is_file() and (tmp_path / "report" / f"{stem}.tex").is_file()
    n_ok = int((df["status"] == "ok").sum())
    assert f"{len(paths)} metric files ({n_ok} ok, {len(paths) - n_ok} failed fits)" in index


def test_msi_plot_without_positive_values_says_so(tmp_path):
    from neuface.report.plots import placeholder_reason, plot_msi_distribution

    paths = [_write_metrics(tmp_path / "m", "neuface", "a", {**M_OK, "msi3d_l": 0.0, "msi3d_v": 0.0})]
    path = plot_msi_distribution(load_metrics(paths), tmp_path / "msi.png")
    assert path.is_file() and placeholder_reason(path) is None  # a figure whose panels say "no positive value"


def test_the_report_says_which_fits_the_filter_rejected(tmp_path, metric_files):
    from neuface.dataset.filter import FilterRecord, FilterThresholds, write_manifest

    paths, sheet = metric_files
    th = FilterThresholds()
    manifests = [
        write_manifest([FilterRecord("mead_a", "val", "neuface", "accepted"),
                        FilterRecord("mead_b", "val", "neuface", "accepted")], tmp_path / "neuface.tsv", th,
                       "neuface"),
        write_manifest([FilterRecord("mead_a", "val", "regress", "rejected", ["NME 9.1% > 8%"]),
                        FilterRecord("mead_b", "test", "regress", "rejected", ["upstream fit: x"]),
                        FilterRecord("vox_a", "val", "regress", "accepted")], tmp_path / "regress.tsv", th,
                       "regress"),
    ]
    made = build_report(paths, tmp_path / "out", sheet=sheet, manifests=manifests)
    table2 = made["table2"]["md"].read_text()
    assert "neuface 2/2 accepted;" in table2
    assert "regress 1/3 accepted (rejected: mead_a: NME 9.1% > 8%; mead_b: upstream fit: x)" in table2
    assert "regress 1/3 accepted" in (tmp_path / "out" / "index.md").read_text()
    made = build_report(paths, tmp_path / "val", sheet=sheet, split="val", manifests=manifests)
    assert "regress 1/2 accepted (rejected: mead_a: NME 9.1% > 8%)." in made["table2"]["md"].read_text()
