"""Shots: cut and identity-switch detection on real faces, short-shot merging, per-shot crops and fits, and the
shots reaching the filter manifest, the packed file, the reader, the metrics and the export."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from neuface.errors import NeufaceError, ShapeError
from neuface.landmarks.identity import change_points, identity_labels, refine_switch, sample_frames
from neuface.landmarks.shots import (
    ShotResult,
    ShotSettings,
    copy_shots,
    detect_cuts,
    frame_histograms,
    histogram_distances,
    merge_short_shots,
    read_shots,
    write_shots,
)
from neuface.shots import check_shots, frame_shapes, shot_of_frame, shots_from_starts, within_shot
from neuface.status import read_status

N_CAR, N_AST = 50, 40  # the two-person clip: carphone frames 0-49, then the astronaut face


# ------------------------------------------------------------------------------------------- shots as data
def test_shot_bounds_helpers():
    b = shots_from_starts([7, 3, 3], 10)
    assert b.tolist() == [[0, 3], [3, 7], [7, 10]] and b.dtype == np.int64
    assert shot_of_frame(b, 10).tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert within_shot(b, 10, 3).tolist() == [True, False, False, True, True, False, False, True]
    assert within_shot(shots_from_starts([], 5), 5, 3).all()
    with pytest.raises(NeufaceError, match="cover"):
        check_shots([[0, 3], [3, 9]], 10)
    with pytest.raises(NeufaceError, match="consecutive"):
        check_shots([[0, 3], [4, 10]], 10)
    with pytest.raises(NeufaceError, match="at least one frame"):
        check_shots([[0, 3], [3, 3], [3, 10]], 10)
    with pytest.raises(ShapeError):
        check_shots(np.zeros((0, 2), np.int64), 10)
    with pytest.raises(NeufaceError, match="lie in"):
        shots_from_starts([10], 10)


def test_frame_shapes_one_beta_per_shot():
    beta = np.arange(3, dtype=np.float32)
    one = {"shape": beta, "expression": np.zeros((4, 2, 5))}
    assert np.array_equal(frame_shapes(one), np.tile(beta, (4, 1)))
    two = {**one, "shots": np.array([[0, 1], [1, 4]]), "shape_shots": np.array([[1, 1, 1], [2, 2, 2.0]])}
    assert frame_shapes(two)[:, 0].tolist() == [1, 2, 2, 2]
    with pytest.raises(NeufaceError, match="both"):
        frame_shapes({**one, "shots": two["shots"]})
    with pytest.raises(ShapeError, match="shape_shots"):
        frame_shapes({**two, "shape_shots": np.zeros((3, 3))})


# ------------------------------------------------------------------------------------------- cuts and merging
def test_histogram_distance_is_zero_for_equal_and_one_for_disjoint_colours():
    black, white = np.zeros((1, 20, 30, 3), np.uint8), np.full((1, 20, 30, 3), 255, np.uint8)
    green = np.zeros((1, 20, 30, 3), np.uint8)
    green[..., 1] = 255
    d = histogram_distances(frame_histograms(np.concatenate([black, black, white, green])))
    assert np.isnan(d[0]) and d[1] == 0.0
    assert d[2] == pytest.approx(1 / 3)  # black -> white: hue and saturation stay 0, value flips
    assert d[3] == pytest.approx(2 / 3)  # white -> green: hue and saturation flip, value stays 1


def test_cut_needs_a_jump_above_threshold_and_running_level():
    rng = np.random.default_rng(0)
    steady = np.r_[np.nan, rng.uniform(0.005, 0.02, 59)]
    steady[30] = 0.5
    assert detect_cuts(steady, 0.2, 3.0).tolist() == [30]
    pan = np.r_[np.nan, rng.uniform(0.25, 0.35, 59)]  # high everywhere (fast pan): no cut
    assert detect_cuts(pan, 0.2, 3.0).size == 0
    flash = steady.copy()
    flash[31] = 0.5  # a one-frame flash: two cuts one frame apart (the 1-frame shot is merged later)
    assert detect_cuts(flash, 0.2, 3.0).tolist() == [30, 31]


def test_short_shots_merge_into_the_previous_one_the_first_into_the_next():
    b = shots_from_starts([4, 30, 31, 50], 60)  # [0,4) [4,30) [30,31) [31,50) [50,60)
    bounds, reasons, notes = merge_short_shots(b, ["start", "cut", "cut", "identity", "cut"], 10)
    assert bounds.tolist() == [[0, 31], [31, 50], [50, 60]]  # [0,4) joins [4,30), then [30,31) joins them
    assert reasons == ["start", "identity", "cut"]
    assert len(notes) == 2 and "0-4" in notes[0] and "next" in notes[0]
    assert "30-31" in notes[1] and "previous" in notes[1]
    bounds, reasons, notes = merge_short_shots(shots_from_starts([3, 6], 9), ["start", "cut", "cut"], 10)
    assert bounds.tolist() == [[0, 9]] and reasons == ["start"] and len(notes) == 2
    same = merge_short_shots(shots_from_starts([20], 40), ["start", "cut"], 10)
    assert same[0].tolist() == [[0, 20], [20, 40]] and same[2] == []


# ------------------------------------------------------------------------------------------- identity logic
def test_change_points_find_person_changes_not_outliers():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 128), rng.normal(0, 1, 128)
    a, b = 0.5 * a / np.linalg.norm(a), 0.5 * b / np.linalg.norm(b)  # ~0.7 apart, like two people

    def noisy(center, n):
        return center + rng.normal(0, 0.15 / np.sqrt(128), (n, 128))

    desc = np.concatenate([noisy(a, 6), noisy(b, 5), noisy(a, 4)])
    assert change_points(desc, 0.6) == [6, 11]
    outlier = noisy(a, 9)
    outlier[4] = b  # one far sample is no new person
    assert change_points(outlier, 0.6) == []
    assert change_points(np.concatenate([noisy(a, 6), noisy(b, 1)]), 0.6) == []  # needs 2 samples each side
    assert identity_labels([desc[:6], desc[6:11], None, desc[11:]], 0.6).tolist() == [0, 1, -1, 0]


def test_refine_switch_bisects_to_the_first_frame_of_the_new_person():
    old, new = np.zeros((2, 4)), np.ones((2, 4))
    calls = []

    def describe(t):
        calls.append(t)
        return np.ones(4) if t >= 37 else np.zeros(4)

    detected = np.array([31, 32, 34, 35, 36, 37, 38, 39])
    assert refine_switch(detected, old, new, 30, 40, describe) == 37
    assert len(calls) <= 4  # bisection, not a scan
    assert refine_switch(np.array([]), old, new, 30, 40, describe) == 40
    assert sample_frames(np.array([0, 1, 1, 1, 0, 1, 1], bool), 0, 7, 2).tolist() == [1, 3, 6]


# ------------------------------------------------------------------------------------------- real faces
@pytest.fixture(scope="module")
def dlib_backend():
    pytest.importorskip("dlib")
    from neuface.errors import AssetMissingError
    from neuface.landmarks import DlibBackend
    from neuface.landmarks.identity import find_face_recognition_model

    try:
        find_face_recognition_model()
        return DlibBackend()
    except AssetMissingError as exc:
        pytest.skip(str(exc))


def _astronaut_clip(path, n: int, seed: int = 0) -> np.ndarray:
    """(n, 144, 176, 3) frames of the astronaut's face, panning right with a little jitter."""
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        dx, dy = int(2 * t + rng.integers(-3, 4)), int(rng.integers(-3, 4))
        win = img[10 + dy: 310 + dy, 80 + dx: 446 + dx]
        out.append(np.asarray(Image.fromarray(win).resize((176, 144), Image.BILINEAR)))
    return np.stack(out)


def _frames_file(tmp, name: str, video: np.ndarray):
    from neuface.synthetic.capture import write_mp4
    from neuface.video import extract_sequence

    mp4 = write_mp4(video, tmp / f"{name}.mp4", fps=25)
    out = tmp / f"{name}.h5"
    rows = pd.DataFrame({"sequence": [name], "view": ["mono"], "path": [str(mp4)]})
    assert extract_sequence(rows, out).ok
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory, carphone_path, astronaut_path):
    """Frames files: carphone alone (60 frames), carphone then the astronaut (a cut between two people), and
    carphone, 6 astronaut frames, carphone again (a short shot)."""
    from neuface.video import extract_sequence, read_frames

    tmp = tmp_path_factory.mktemp("shots")
    car_file = tmp / "car.h5"
    rows = pd.DataFrame({"sequence": ["car"], "view": ["mono"], "path": [str(carphone_path)]})
    assert extract_sequence(rows, car_file, max_frames=60).ok
    car = read_frames(car_file, "mono", 0, 60)
    ast = _astronaut_clip(astronaut_path, N_AST)
    two = _frames_file(tmp, "two", np.concatenate([car[:N_CAR], ast]))
    short = _frames_file(tmp, "short", np.concatenate([car[:30], ast[:6], car[30:54]]))
    return {"car": car_file, "two": two, "short": short, "tmp": tmp}


def test_a_cut_between_two_people_gives_two_shots_and_restarts_the_tracker(clips, dlib_backend, run_cli):
    from neuface.landmarks import read_landmarks

    out = clips["tmp"] / "two_lmk.h5"
    assert run_cli("landmarks", "--frames", clips["two"], "--out", out, "--backend", "dlib") == 0
    shots = read_shots(out)
    assert shots["bounds"].tolist() == [[0, N_CAR], [N_CAR, N_CAR + N_AST]]
    assert shots["reasons"] == ["start", "cut"] and shots["identity"].tolist() == [0, 1]  # two people
    status = read_status(out)
    assert status.ok and status.details["shots"]["n_shots"] == 2
    r = read_landmarks(out, "mono")
    assert r["detected"][N_CAR - 5:N_CAR + 5].all()  # the face is taken up right at the cut
    with h5py.File(out) as f:
        score = f["views/mono/cut_score"][()]
        assert score[N_CAR] > 0.3 and np.nanmax(np.delete(score, N_CAR)) < 0.1
        assert f["views/mono/descriptors"].shape[1] == 128
        assert json.loads(f["shots"].attrs["settings"])["identity_threshold"] == 0.6
    # the crops stage carries the shots and smooths boxes within each shot only
    from neuface.crops import crop_boxes, read_crops

    crops = clips["tmp"] / "two_crops.h5"
    assert run_cli("crops", "--frames", clips["two"], "--landmarks", out, "--out", crops) == 0
    assert read_shots(crops)["bounds"].tolist() == shots["bounds"].tolist()
    c = read_crops(crops, "mono")
    for s, e in shots["bounds"]:
        want, _ = crop_boxes(r["landmarks"][s:e], r["detected"][s:e], 1.25, 5)
        assert np.allclose(c["center"][s:e], want)


class _TwoFaces:
    """Fake backend: face A (small, left) in every frame, face B (larger, right) from frame 5 on."""

    name, version, score_kind = "fake", "0", "none"

    def detect(self, frames):
        a, b = [10, 10, 30, 30, 1.0], [50, 10, 90, 50, 1.0]
        return [np.array([a] if i < 5 else [a, b], dtype=np.float64) for i in range(len(frames))]

    def landmarks(self, frames, boxes):
        return np.zeros((len(frames), 68, 2), np.float32), np.ones((len(frames), 68), np.float32)


def test_the_tracker_restarts_at_a_cut():
    from neuface.landmarks import landmarks_for_view, track_faces

    frames = np.zeros((10, 8, 8, 3), np.uint8)
    kept = landmarks_for_view(frames, _TwoFaces(), batch_size=10)
    cut = landmarks_for_view(frames, _TwoFaces(), batch_size=10, resets=[5])
    assert (kept["boxes"][:, 0] == 10).all()  # without a cut the tracker stays on A
    assert (cut["boxes"][:5, 0] == 10).all() and (cut["boxes"][5:, 0] == 50).all()  # at the cut: the largest face
    boxes = _TwoFaces().detect(frames)
    assert track_faces(boxes).tolist() == [0] * 10 and track_faces(boxes, resets=[5]).tolist() == [0] * 5 + [1] * 5


def test_an_identity_switch_without_a_visual_cut_starts_a_shot_at_its_frame(clips, dlib_backend):
    from neuface.landmarks import detect_sequence

    out = clips["tmp"] / "two_identity.h5"
    settings = ShotSettings(cut_threshold=1.0)  # no visual cut can reach 1.0 here: the descriptors must find it
    assert detect_sequence(clips["two"], out, dlib_backend, shots=settings).ok
    shots = read_shots(out)
    assert shots["bounds"].tolist() == [[0, N_CAR], [N_CAR, N_CAR + N_AST]]
    assert shots["reasons"] == ["start", "identity"] and shots["identity"].tolist() == [0, 1]


def test_a_clip_without_cuts_is_one_shot_and_no_shots_writes_none(clips, dlib_backend, run_cli):
    out = clips["tmp"] / "car_lmk.h5"
    assert run_cli("landmarks", "--frames", clips["car"], "--out", out, "--backend", "dlib") == 0
    shots = read_shots(out)
    assert shots["bounds"].tolist() == [[0, 60]] and shots["reasons"] == ["start"]
    off = clips["tmp"] / "car_off.h5"
    assert run_cli("landmarks", "--frames", clips["car"], "--out", off, "--backend", "dlib", "--no-shots") == 0
    with h5py.File(off) as f:
        assert "shots" not in f and "cut_score" not in f["views/mono"]
    assert read_shots(off)["bounds"].tolist() == [[0, 60]]  # absent = one shot
    from neuface.landmarks import read_landmarks

    a, b = read_landmarks(out, "mono"), read_landmarks(off, "mono")
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)  # one shot: tracking as before


def test_a_short_shot_is_merged_and_recorded(clips, dlib_backend):
    from neuface.landmarks import detect_sequence

    out = clips["tmp"] / "short_lmk.h5"
    status = detect_sequence(clips["short"], out, dlib_backend, shots=ShotSettings(min_frames=10))
    shots = read_shots(out)
    assert shots["bounds"].tolist() == [[0, 36], [36, 60]] and shots["reasons"] == ["start", "cut"]
    assert shots["identity"].tolist() == [0, 0]  # carphone on both sides
    assert any("30-36" in w and "merged into the previous shot" in w for w in status.warnings)
    kept = clips["tmp"] / "short_kept.h5"
    detect_sequence(clips["short"], kept, dlib_backend, shots=ShotSettings(min_frames=3, identity_stride=2))
    shots = read_shots(kept)
    assert shots["bounds"].tolist() == [[0, 30], [30, 36], [36, 60]]
    assert shots["identity"].tolist() == [0, 1, 0]  # the carphone man comes back


def test_the_face_descriptor_model_is_found_offline_and_checked_as_an_asset(dlib_backend, tmp_path):
    from neuface.assets import check_assets
    from neuface.errors import AssetMissingError
    from neuface.landmarks.identity import find_face_recognition_model

    assert find_face_recognition_model().name == "dlib_face_recognition_resnet_model_v1.dat"
    with pytest.raises(AssetMissingError, match="does not exist"):
        find_face_recognition_model(tmp_path / "nope.dat")
    report = check_assets(None, None, landmark_backend="dlib", face_descriptor=True)[-1]
    assert report.name == "face descriptor" and report.state == "ok"
    assert "face descriptor" not in [r.name for r in check_assets(None, None, landmark_backend="dlib")]


def test_bad_shot_settings_are_clear(run_cli, tmp_path):
    with pytest.raises(NeufaceError, match="cut_threshold"):
        ShotSettings(cut_threshold=0)
    with pytest.raises(NeufaceError, match="min_frames"):
        ShotSettings(min_frames=0)
    assert run_cli("landmarks", "--frames", tmp_path / "x.h5", "--out", tmp_path / "y.h5",
                   "--identity-stride", "0") == 2


# ------------------------------------------------------------------------------------------- one β per shot
def _tiny_encoder(seed: int = 0):
    from neuface.encoders.base import DECA_LAYOUT, DECA_PARAM_DIM, FlameEncoder, decode_deca_params

    class Tiny(FlameEncoder):
        input_size = 32
        encoder_id = "tiny:shots"

        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                     nn.Flatten(), nn.Linear(32, DECA_PARAM_DIM))
            with torch.no_grad():
                for m in self.net:
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
                        m.bias.zero_()
                self.net[-1].bias[DECA_LAYOUT["cam"][0]] = 5.0

        def forward(self, images):
            return decode_deca_params(self.net(images))

    return Tiny().eval()


@pytest.fixture(scope="module")
def two_people(tmp_path_factory):
    """Two rendered 6-frame sequences of different heads (seeds 0, 1) and their concatenation as one sequence
    of two shots (a cut at frame 6)."""
    from neuface.cli import main
    from neuface.fitting.demo_data import write_synthetic_sequence
    from neuface.flame import FlameLayer

    root = tmp_path_factory.mktemp("two_people")
    assert main(["kit", "build", "--out", str(root / "kit")]) == 0
    flame, emb = root / "kit/flame/generic_model.pkl", root / "kit/flame/landmark_embedding.npy"
    layer = FlameLayer.from_files(flame, emb)
    parts = [write_synthetic_sequence(root / f"p{k}", layer, n_frames=6, views=("front",), size=64, seed=k,
                                      sequence="two") for k in range(2)]
    both = root / "both"
    both.mkdir()
    for name in ("landmarks.h5", "crops.h5"):
        with h5py.File(both / name, "w") as out, h5py.File(parts[0].crops.parent / name) as a, \
                h5py.File(parts[1].crops.parent / name) as b:
            out.attrs.update(dict(a.attrs))
            out.attrs["n_frames"] = 12
            for key in a["views/front"]:
                out[f"views/front/{key}"] = np.concatenate([a[f"views/front/{key}"][()], b[f"views/front/{key}"][()]])
            if name == "landmarks.h5":
                write_shots(out, ShotResult(np.array([[0, 6], [6, 12]]), ["start", "cut"], np.array([0, 1])),
                            ShotSettings())
            else:
                copy_shots(both / "landmarks.h5", out)
    return {"flame": flame, "embedding": emb, "layer": layer, "parts": parts,
            "crops": both / "crops.h5", "landmarks": both / "landmarks.h5", "root": root}


def _fit(data, crops, landmarks, out, annotator="regress", checkpoint=None, **overrides):
    from neuface.fitting import api
    from neuface.fitting.config import resolve_annotator
    from neuface.fitting.output import read_fit

    settings = resolve_annotator(annotator, {"progress": False, **overrides})
    status = api.run_fit(crops, landmarks, data["flame"], data["embedding"], annotator, settings, out,
                         checkpoint=checkpoint, encoder=copy.deepcopy(_tiny_encoder()))
    assert status.ok, status.reason
    return read_fit(out)


@pytest.mark.parametrize("annotator, overrides", [
    ("regress", {}),
    ("neuface", {"n_passes": 2, "min_passes": 1, "window_frames": 3, "checkpoint_every": 1}),
])
def test_each_shot_is_fitted_with_its_own_identity(two_people, tmp_path, annotator, overrides):
    ckpt = tmp_path / "ckpt" / "two.pt"
    ckpt.parent.mkdir()
    fit = _fit(two_people, two_people["crops"], two_people["landmarks"], tmp_path / "two.h5", annotator, ckpt,
               **overrides)
    alone = [_fit(two_people, p.crops, p.landmarks, tmp_path / f"alone{k}.h5", annotator, **overrides)
             for k, p in enumerate(two_people["parts"])]
    assert fit["shots"].tolist() == [[0, 6], [6, 12]] and fit["shot_reasons"] == ["start", "cut"]
    assert fit["shape_shots"].shape == (2, 100)
    assert not np.allclose(fit["shape_shots"][0], fit["shape_shots"][1], atol=1e-4)  # two identities
    for k in range(2):  # every shot is the fit of that shot alone
        assert np.allclose(fit["shape_shots"][k], alone[k]["shape"], atol=1e-5)
        for key in ("expression", "global_pose", "cam", "landmarks_pred"):
            assert np.allclose(fit[key][6 * k: 6 * k + 6], alone[k][key], atol=1e-4), key
    assert np.array_equal(fit["shape"], fit["shape_shots"][0])  # equal lengths: the first shot's β
    assert np.allclose(frame_shapes(fit)[6:], fit["shape_shots"][1])
    assert fit["status"].details["n_shots"] == 2 and len(fit["status"].details["shots"]) == 2
    if annotator == "neuface":
        assert len(fit["losses"]["total"]) == fit["status"].details["n_steps"] == sum(
            len(a["losses"]["total"]) for a in alone)
    assert list(ckpt.parent.iterdir()) == []  # the shot checkpoints are removed once the fit is written


class _StopAfter:
    """A stop signal that is requested at its ``n``-th poll (one poll per optimisation step)."""

    def __init__(self, n: int) -> None:
        self.n, self.polls = n, 0

    @property
    def requested(self) -> bool:
        self.polls += 1
        return self.polls >= self.n


def test_a_preempted_fit_of_several_shots_resumes_in_its_shot(two_people, tmp_path):
    from neuface.fitting import api
    from neuface.fitting.checkpoint import Preempted
    from neuface.fitting.config import resolve_annotator
    from neuface.fitting.output import read_fit

    settings = resolve_annotator("neuface", {"progress": False, "n_passes": 2, "min_passes": 1, "window_frames": 3,
                                             "checkpoint_every": 100})
    args = (two_people["crops"], two_people["landmarks"], two_people["flame"], two_people["embedding"], "neuface",
            settings)
    ckpt = tmp_path / "ckpt" / "two.pt"
    api.run_fit(*args, tmp_path / "whole.h5", encoder=_tiny_encoder())
    steps_per_shot = read_fit(tmp_path / "whole.h5")["status"].details["shots"][0]["n_steps"]
    with pytest.raises(Preempted):
        api.run_fit(*args, tmp_path / "cut.h5", checkpoint=ckpt, encoder=_tiny_encoder(),
                    stop=_StopAfter(steps_per_shot + 2))  # stopped in the second shot
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["two.shot1.pt"]
    assert not (tmp_path / "cut.h5").exists()
    api.run_fit(*args, tmp_path / "cut.h5", checkpoint=ckpt, encoder=_tiny_encoder())
    whole, resumed = read_fit(tmp_path / "whole.h5"), read_fit(tmp_path / "cut.h5")
    for key in ("shape_shots", "expression", "global_pose", "cam", "landmarks_pred"):
        assert np.allclose(whole[key], resumed[key], atol=1e-6), key
    assert list(ckpt.parent.iterdir()) == []


def test_shots_reach_the_manifest_the_packed_file_the_reader_and_the_metrics(two_people, tmp_path):
    from neuface.dataset import NeuFaceH5
    from neuface.dataset.export import export_sequence
    from neuface.dataset.filter import FilterThresholds, evaluate_fit, filter_fits, read_manifest, write_manifest
    from neuface.dataset.pack import pack_split
    from neuface.dataset.verify import verify_file
    from neuface.metrics.sequence import sequence_metrics

    path = tmp_path / "fits" / "two.h5"
    path.parent.mkdir()
    fit = _fit(two_people, two_people["crops"], two_people["landmarks"], path)
    loose = FilterThresholds(max_shape_norm=1e9, max_nme=1e9, max_missing_frac=1.0)
    manifest = write_manifest(filter_fits([path], {"two": "train"}, "regress", loose), tmp_path / "m.tsv", loose)
    row = read_manifest(manifest)[0][0]
    assert row["status"] == "accepted" and row["n_shots"] == "2"
    norms = np.linalg.norm(fit["shape_shots"].astype(np.float64), axis=1)
    assert float(row["shape_norm"]) == pytest.approx(norms.max(), rel=1e-5)
    strict = evaluate_fit(path, FilterThresholds(max_shape_norm=float(norms.min()) + 1e-6, max_nme=1e9,
                                                 max_missing_frac=1.0))
    assert strict.status == "rejected" and f"(shot {int(norms.argmax())} of 2)" in strict.reasons[0]

    packed = tmp_path / "train.h5"
    pack_split(manifest, "train", packed)
    assert verify_file(packed).ok, verify_file(packed).summary()
    with h5py.File(packed) as f:
        g = f["sequences/two"]
        assert g["shots"][()].tolist() == [[0, 6], [6, 12]] and g.attrs["n_shots"] == 2
        assert np.array_equal(g["shape_shots"][()], fit["shape_shots"])
    ds = NeuFaceH5(packed, clip_len=4, stride=2, with_vertices=True, flame=two_people["layer"])
    assert ds.clips() == [("two", "front", 0), ("two", "front", 2), ("two", "front", 6), ("two", "front", 8)]
    assert ds.shots["two"].tolist() == [[0, 6], [6, 12]]
    late = ds[2]
    assert late["shot"].tolist() == [1] * 4 and torch.allclose(late["shape"], torch.as_tensor(fit["shape_shots"][1]))
    direct = two_people["layer"](shape=late["shapes"], expression=late["expression"], global_pose=late["global_pose"],
                                 pose=late["pose"]).vertices
    assert torch.allclose(late["vertices"], direct, atol=1e-6)
    across = NeuFaceH5(packed, clip_len=4, stride=2, split_shots=False)
    crossing = across[across.clips().index(("two", "front", 4))]
    assert crossing["shot"].tolist() == [0, 0, 1, 1]
    assert torch.allclose(crossing["shapes"][2], torch.as_tensor(fit["shape_shots"][1]))
    whole = NeuFaceH5(packed, clip_len=None)
    assert [len(whole[i]["expression"]) for i in range(len(whole))] == [6, 6]

    export_sequence(packed, "two", tmp_path / "export")
    with np.load(tmp_path / "export" / "params.npz") as z:
        shapes = z["shapes"]
    assert np.allclose(shapes[:6], fit["shape_shots"][0]) and np.allclose(shapes[6:], fit["shape_shots"][1])

    res = sequence_metrics(path, two_people["layer"])
    assert res["status"] == "ok" and res["metrics"]["msi3d_l"] > 0


def test_the_overlay_draws_each_shot_with_its_own_beta(two_people, tmp_path):
    from neuface.report.overlay import render_overlay

    path = _fit(two_people, two_people["crops"], two_people["landmarks"], tmp_path / "two.h5")
    frames = tmp_path / "frames.h5"
    with h5py.File(frames, "w") as f, h5py.File(two_people["crops"]) as c:
        f["views/front/frames"] = c["views/front/crops"][()]  # the synthetic crops are the frames
    one_beta = tmp_path / "one_beta.h5"  # the same fit without its shots: every frame drawn with shot 0's β
    with h5py.File(tmp_path / "two.h5") as src, h5py.File(one_beta, "w") as dst:
        for key in src:
            if key not in ("shots", "shape_shots"):
                src.copy(src[key], dst, name=key)
        dst.attrs.update({k: v for k, v in src.attrs.items() if not k.startswith("shot_")})
    two = render_overlay(tmp_path / "two.h5", frames, two_people["layer"], tile=64)
    one = render_overlay(one_beta, frames, two_people["layer"], tile=64)
    assert two.shape == (12, 64, 64, 3) and path["shape_shots"].shape == (2, 100)
    assert np.array_equal(two[:6], one[:6]) and not np.array_equal(two[6:], one[6:])


def test_msi_does_not_difference_across_a_cut(two_people, tmp_path):
    from neuface.flame import FlameLayer
    from neuface.metrics.core import MSI_EPS
    from neuface.metrics.fitfile import write_fit_file
    from neuface.metrics.sequence import sequence_metrics

    layer = FlameLayer.from_files(two_people["flame"], two_people["embedding"], dtype=torch.float64)
    n_f = 12
    pose = np.zeros((n_f, 1, 3))
    pose[6:] = [0.0, 0.5, 0.0]  # the head turns between the shots, but is still within each
    shape_shots = np.zeros((2, 100))
    shape_shots[1, :3] = 1.0
    common = dict(sequence="s", annotator="regress", views=["mono"], expression=np.zeros((n_f, 1, 50)),
                  global_pose=pose, pose=np.zeros((n_f, 1, 12)))
    cut = write_fit_file(tmp_path / "cut.h5", shape=shape_shots[0], shots=np.array([[0, 6], [6, n_f]]),
                         shape_shots=shape_shots, **common)
    uncut = write_fit_file(tmp_path / "uncut.h5", shape=shape_shots[0], **common)
    m_cut = sequence_metrics(cut, layer)["metrics"]
    m_uncut = sequence_metrics(uncut, layer)["metrics"]
    assert m_cut["msi3d_l"] == pytest.approx(1 / MSI_EPS) and m_cut["msi3d_v"] == pytest.approx(1 / MSI_EPS)
    assert m_uncut["msi3d_l"] < 1e-3 / MSI_EPS  # differencing across the cut would see the jump
