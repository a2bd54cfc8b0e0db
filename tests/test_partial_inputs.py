"""Partial inputs (truncated video, views of unequal length, a view missing from the sheet, a dropped view) are
coded warnings that travel frames -> landmarks -> crops -> fit -> filter manifest -> packed dataset, and
``partial_inputs: reject`` rejects them. Real footage (carphone_pristine.mp4) through the real stage code; a
fixed-box landmark backend and a tiny encoder keep it fast."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
from test_fitting import TinyEncoder
from test_video import _faststart_cut, _sheet, _write_video

from neuface.crops import crop_sequence
from neuface.dataset import NeuFaceH5
from neuface.dataset.filter import FilterThresholds, evaluate_fit, read_manifest, write_manifest
from neuface.errors import NeufaceError
from neuface.fitting import api
from neuface.input_warnings import InputWarning, input_warnings, split_codes
from neuface.landmarks import detect_sequence
from neuface.status import StageStatus, read_status

N_POINTS = 68


class BoxBackend:
    """A face in the middle of every frame, 68 points on an ellipse inside it (no detector needed)."""

    name = "box"
    version = "test"
    score_kind = "uniform"

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        h, w = frames.shape[1:3]
        return [np.array([[0.3 * w, 0.2 * h, 0.7 * w, 0.8 * h, 1.0]]) for _ in frames]

    def landmarks(self, frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.linspace(0, 2 * np.pi, N_POINTS, endpoint=False)
        centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
        half = (boxes[:, 2:4] - boxes[:, :2]) / 2 * 0.8
        pts = centre[:, None] + half[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)[None]
        return pts.astype(np.float32), np.ones((len(boxes), N_POINTS), np.float32)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from neuface.cli import main

    out = tmp_path_factory.mktemp("kit")
    assert main(["kit", "build", "--out", str(out)]) == 0
    return out / "flame" / "generic_model.pkl", out / "flame" / "landmark_embedding.npy"


@pytest.fixture(scope="module")
def fits(tmp_path_factory, carphone_path, kit):
    """Five sequences through frames -> landmarks -> crops -> fit (regress): one clean, four partial."""
    from neuface.cli import main

    tmp = tmp_path_factory.mktemp("partial")
    videos = tmp / "videos"
    videos.mkdir()
    cut = _faststart_cut(carphone_path, videos / "cut.mp4", 0.2)  # 18 of 120 frames decode
    short = _write_video(videos / "short.mp4", 12, size=(176, 144))
    (videos / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    rows = [("clean", "front", carphone_path), ("clean", "left", carphone_path),
            ("trunc", "front", cut), ("trunc", "left", carphone_path),
            ("trim", "front", carphone_path), ("trim", "left", short),
            ("missing", "front", carphone_path),
            ("dropped", "front", carphone_path), ("dropped", "left", videos / "random.mp4")]
    sheet = _sheet(tmp, rows)
    encoder = TinyEncoder(0)
    original = api.load_encoder
    api.load_encoder = lambda kind, weights, device: copy.deepcopy(encoder)
    out = {}
    try:
        for seq in ("clean", "trunc", "trim", "missing", "dropped"):
            frames, lmk, crops, fit = (tmp / d / f"{seq}.h5" for d in ("frames", "landmarks", "crops", "fits"))
            # the cap keeps the views at 24 frames: the truncated one has 18, the short one 12
            assert main(["frames", "--sheet", str(sheet), "--sequence", seq, "--out", str(frames),
                         "--max-frames", "24"]) == 0
            assert detect_sequence(frames, lmk, BoxBackend()).ok
            assert crop_sequence(frames, lmk, crops, crop_size=32).ok
            assert main(["fit", "--crops", str(crops), "--landmarks", str(lmk), "--flame", str(kit[0]),
                         "--embedding", str(kit[1]), "--annotator", "regress", "--encoder", "builtin",
                         "--settings", '{"progress": false}', "--device", "cpu", "--out", str(fit)]) == 0
            out[seq] = {"frames": frames, "landmarks": lmk, "crops": crops, "fit": fit}
    finally:
        api.load_encoder = original
    return tmp, sheet, out


def _expected(seq: str, frames_status: StageStatus) -> list[str]:
    """The codes sequence ``seq`` should carry (a dropped view's code holds the decoder's message)."""
    if seq == "dropped":
        return [w for w in frames_status.warnings if w.startswith("dropped_view:left:")]
    return {"clean": [], "trunc": ["truncated_decode:front:18/120", "trimmed_views:left:24->18"],
            "trim": ["trimmed_views:front:24->12"], "missing": ["missing_views:left"]}[seq]


def test_every_stage_carries_the_partial_input_warnings(fits):
    _, _, out = fits
    for seq, files in out.items():
        frames_status = read_status(files["frames"])
        assert frames_status.ok, frames_status
        want = _expected(seq, frames_status)
        if seq == "dropped":
            assert len(want) == 1 and "Invalid data" in want[0]
        for stage in ("frames", "landmarks", "crops", "fit"):
            status = read_status(files[stage])
            assert status.ok and input_warnings(status.warnings) == want, (seq, stage, status.warnings)


def test_the_manifest_records_them_and_reject_rejects_them(fits, tmp_path):
    _, _, out = fits
    lenient = {"max_shape_norm": 1e9, "max_missing_frac": 1.0, "max_nme": 1e9}
    for policy in ("flag", "reject"):
        th = FilterThresholds(**lenient, partial_inputs=policy)
        for seq, files in out.items():
            rec = evaluate_fit(files["fit"], th, annotator="regress")
            want = _expected(seq, read_status(files["frames"]))
            assert rec.warnings == want, (seq, rec.warnings)
            if policy == "flag" or not want:
                assert rec.status == "accepted", (seq, rec.reasons)
            else:
                assert rec.status == "rejected" and rec.reasons == ["partial input: " + ", ".join(want)]
    with pytest.raises(NeufaceError, match="partial_inputs must be one of"):
        FilterThresholds(partial_inputs="ignore")


def test_the_cli_manifest_and_the_packed_dataset_carry_them(fits, run_cli, kit):
    tmp, sheet, out = fits
    lenient = ["--max-shape-norm", "1e9", "--max-missing-frac", "1", "--max-nme", "1e9"]
    wanted = {seq: _expected(seq, read_status(f["frames"])) for seq, f in out.items()}
    manifest = tmp / "filter" / "regress.tsv"
    assert run_cli("filter", "--fit-dir", tmp / "fits", "--sheet", sheet, "--annotator", "regress",
                   "--out", manifest, *lenient) == 0
    rows, meta = read_manifest(manifest)
    assert meta["thresholds"]["partial_inputs"] == "flag"
    assert {r["sequence"]: split_codes(r["warnings"]) for r in rows} == wanted
    assert all(r["status"] == "accepted" for r in rows)
    packed = tmp / "dataset" / "train.h5"
    assert run_cli("pack", "--manifest", manifest, "--split", "train", "--out", packed, "--flame", kit[0]) == 0
    with h5py.File(packed) as f:
        assert f.attrs["n_sequences_with_warnings"] == 4
        assert list(f["sequences/trim"].attrs["warnings"]) == ["trimmed_views:front:24->12"]
        assert len(f["sequences/clean"].attrs["warnings"]) == 0
    ds = NeuFaceH5(packed, clip_len=4)
    assert ds.warnings == wanted and ds.sequence_warnings("missing") == ["missing_views:left"]
    with pytest.raises(NeufaceError, match="no sequence"):
        ds.sequence_warnings("nope")
    assert run_cli("h5", "verify", packed) == 0

    rejected = tmp / "filter" / "regress_reject.tsv"
    assert run_cli("filter", "--fit-dir", tmp / "fits", "--sheet", sheet, "--annotator", "regress",
                   "--out", rejected, *lenient, "--partial-inputs", "reject") == 0
    rows, _ = read_manifest(rejected)
    status = {r["sequence"]: (r["status"], r["reasons"]) for r in rows}
    assert status["clean"] == ("accepted", "")
    for seq in ("trunc", "trim", "missing", "dropped"):
        assert status[seq][0] == "rejected" and status[seq][1].startswith("partial input: "), status[seq]
    strict = tmp / "dataset" / "strict.h5"
    assert run_cli("pack", "--manifest", rejected, "--split", "train", "--out", strict) == 0
    assert NeuFaceH5(strict, clip_len=4).warnings == {"clean": []}


def test_a_failed_upstream_stage_keeps_the_warnings():
    frames = StageStatus("s", "frames", warnings=("missing_views:left", "prose note"))
    lmk = StageStatus.failed("s", "landmarks", "no face detected").with_warnings(frames.warnings)
    fit = lmk.propagate("crops").propagate("fit")
    assert fit.reason == "upstream landmarks: no face detected"
    assert fit.warnings == ("missing_views:left", "prose note")
    assert input_warnings(fit.warnings) == ["missing_views:left"]


def test_coded_warnings_parse_and_stay_one_tsv_cell():
    w = InputWarning("dropped_view", "le:ft", "cannot open a;b\tc\n d")
    assert w.code == "dropped_view:le_ft:cannot open a, b, c, d"
    assert InputWarning.parse(w.code) == w
    assert InputWarning.parse("truncated_decode:front:75/270").detail == "75/270"
    assert InputWarning.parse("view front: face found in 3/4 frames") is None
    assert InputWarning.parse("missing_views") is None
    assert len(InputWarning("dropped_view", "v", "x" * 500).detail) == 120
    with pytest.raises(ValueError, match="unknown input warning kind"):
        InputWarning("partial", "v")
    assert split_codes("") == [] and split_codes("a:b; c:d") == ["a:b", "c:d"]


def test_version_2_manifests_are_read_with_empty_warnings(tmp_path):
    from neuface.dataset.filter import FilterRecord

    path = write_manifest([FilterRecord("a", "train", "neuface", "accepted", warnings=["missing_views:x"])],
                          tmp_path / "m.tsv", FilterThresholds())
    lines = path.read_text().splitlines()
    header = lines[4].split("\t")
    drop = {header.index("warnings"), header.index("n_shots")}  # v2 had neither (n_shots came with v4)
    v2 = [lines[0].replace("v4", "v2"), *lines[1:4]] + ["\t".join(c for i, c in enumerate(ln.split("\t"))
                                                                  if i not in drop) for ln in lines[4:]]
    (tmp_path / "v2.tsv").write_text("\n".join(v2) + "\n")
    rows, _ = read_manifest(tmp_path / "v2.tsv")
    assert rows[0]["warnings"] == "" and rows[0]["status"] == "accepted" and rows[0]["n_shots"] == "1"
    assert read_manifest(path)[0][0]["warnings"] == "missing_views:x"


def test_a_view_without_any_face_is_a_dropped_view_from_the_crops_stage(tmp_path, carphone_path, run_cli):
    class NoFaceInSmallFrames(BoxBackend):
        def detect(self, frames):
            return [np.zeros((0, 5)) for _ in frames] if frames.shape[2] < 100 else super().detect(frames)

    small = _write_video(tmp_path / "small.mp4", 6, size=(64, 48))
    sheet = _sheet(tmp_path, [("s", "front", carphone_path), ("s", "left", small)])
    frames, lmk, crops = tmp_path / "f.h5", tmp_path / "l.h5", tmp_path / "c.h5"
    assert run_cli("frames", "--sheet", sheet, "--sequence", "s", "--out", frames, "--max-frames", 6) == 0
    assert detect_sequence(frames, lmk, NoFaceInSmallFrames()).ok
    status = crop_sequence(frames, lmk, crops, crop_size=32)
    assert status.ok and status.details["views"] == ["front"]
    assert input_warnings(status.warnings) == ["dropped_view:left:no face detected"]
    assert "view left: no face detected in 6 frame(s)" in read_status(lmk).warnings  # prose: not coded
    assert input_warnings(read_status(lmk).warnings) == []
