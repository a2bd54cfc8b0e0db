"""Fidelity metrics: analytic cases, naive float64 references, sequence_metrics on fit files, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neuface.errors import NeufaceError, ShapeError
from neuface.metrics import (
    MSI_EPS,
    cvd,
    cvd_per_view,
    mpve,
    msi_3d,
    msi_3d_batch,
    nme,
    nme_per_sample,
    sequence_metrics,
    write_fit_file,
)
from neuface.status import StageStatus


# ----------------------------------------------------------------------------------------------- MSI_3D
def test_msi_constant_velocity_hits_the_floor_exactly():
    t = torch.arange(20, dtype=torch.float64)[:, None, None]
    start = torch.randn(5, 3, dtype=torch.float64)
    vel = torch.randn(5, 3, dtype=torch.float64) * 1e-3
    points = start + t * vel  # zero acceleration
    assert msi_3d(points) == pytest.approx(1.0 / MSI_EPS, rel=1e-12)
    assert msi_3d(points, eps=0.5) == pytest.approx(2.0)


def test_msi_known_jitter():
    n = 10  # 8 accelerations: whole periods of both signals below
    t = torch.arange(n, dtype=torch.float64)
    points = torch.zeros(n, 2, 3, dtype=torch.float64)
    a = 1e-3  # 1 mm
    points[:, 0, 0] = a * (-1.0) ** t  # acceleration -4a(-1)^t: variance 16 mm^2
    points[:, 1, 1] = 2 * a * torch.sin(math.pi * t / 2)  # acceleration -2A sin: variance 2 A^2 = 8 mm^2
    expected = (1 / 16 + 1 / 8) / 2
    assert msi_3d(points) == pytest.approx(expected, rel=1e-10)
    # scale: coordinates x2 -> variances x4 -> MSI / 4; metres vs millimetres -> 1e6
    assert msi_3d(2 * points) == pytest.approx(expected / 4, rel=1e-10)
    assert msi_3d(points, scale=1.0) == pytest.approx(expected * 1e6, rel=1e-10)


def _naive_msi(points: np.ndarray, scale: float = 1000.0, eps: float = MSI_EPS) -> float:
    n_f, n_k, _ = points.shape
    total = 0.0
    for k in range(n_k):
        acc = [(points[f + 1, k] - 2 * points[f, k] + points[f - 1, k]) * scale for f in range(1, n_f - 1)]
        acc = np.array(acc)
        var = sum(float(np.var(acc[:, axis])) for axis in range(3))
        total += 1.0 / max(var, eps)
    return total / n_k


def test_msi_matches_naive_loop_and_batches():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(3, 12, 7, 3)) * 1e-3
    batch = msi_3d_batch(torch.as_tensor(pts, dtype=torch.float32))
    for i in range(3):
        ref = _naive_msi(pts[i])
        assert msi_3d(torch.as_tensor(pts[i])) == pytest.approx(ref, rel=1e-10)
        assert float(batch[i]) == pytest.approx(ref, rel=1e-4)
    with pytest.raises(ShapeError, match="at least 4 frames"):
        msi_3d(torch.zeros(3, 5, 3))
    with pytest.raises(ShapeError):
        msi_3d(torch.zeros(10, 5, 2))


# ----------------------------------------------------------------------------------------------- CVD
def test_cvd_identical_views_and_known_offset():
    verts = torch.randn(4, 1, 50, 3, dtype=torch.float64).expand(-1, 2, -1, -1).clone()
    assert torch.allclose(cvd(verts), torch.zeros(4, dtype=torch.float64))
    d = 0.002  # 2 mm along x in view 1
    verts[:, 1, :, 0] += d
    assert torch.allclose(cvd(verts), torch.full((4,), 2.0, dtype=torch.float64))
    # L1, not L2: an offset (1, 1, 1) mm has L1 3 mm
    v3 = verts[:, :1].expand(-1, 3, -1, -1).clone()
    v3[:, 2] += 0.001
    assert torch.allclose(cvd(v3), torch.full((4,), 2 * 3.0 / 3, dtype=torch.float64))
    assert torch.allclose(cvd_per_view(v3), torch.tensor([1.5, 1.5, 3.0], dtype=torch.float64))
    with pytest.raises(ShapeError, match="at least 2 views"):
        cvd(verts[:, :1])


def test_cvd_matches_naive_loop():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3, 4, 30, 3)) * 1e-2
    per_frame = cvd(torch.as_tensor(v)).numpy()
    per_view = cvd_per_view(torch.as_tensor(v)).numpy()
    ref_f, ref_v = np.zeros(3), np.zeros(4)
    for f in range(3):
        pairs = []
        for i in range(4):
            for j in range(4):
                if i != j:
                    d = np.abs(v[f, i] - v[f, j]).sum(axis=1).mean() * 1000
                    ref_v[i] += d / 3 / 3
                    if i < j:
                        pairs.append(d)
        ref_f[f] = np.mean(pairs)
    np.testing.assert_allclose(per_frame, ref_f, rtol=1e-10)
    np.testing.assert_allclose(per_view, ref_v, rtol=1e-10)


# ----------------------------------------------------------------------------------------------- NME, MPVE
def _face_target(n: int) -> torch.Tensor:
    target = torch.rand(n, 68, 2, dtype=torch.float64) * 100 + 50
    target[:, 36] = torch.tensor([100.0, 100.0])
    target[:, 45] = torch.tensor([200.0, 100.0])  # eye corners 100 px apart
    return target


def test_nme_known_offsets_and_validity():
    target = _face_target(4)
    pred = target + torch.tensor([3.0, 4.0], dtype=torch.float64)  # 5 px on every point
    assert nme(pred, target) == pytest.approx(5.0)
    pred[1] += torch.tensor([6.0, 8.0], dtype=torch.float64)  # 15 px on frame 1
    valid = torch.tensor([True, False, True, True])
    assert nme(pred, target, valid) == pytest.approx(5.0)
    assert nme(pred, target) == pytest.approx((5 * 3 + 15) / 4)
    target[2, 0] = float("nan")  # a missing detection is not counted
    per = nme_per_sample(pred, target)
    assert math.isnan(float(per[2])) and float(per[0]) == pytest.approx(5.0)
    assert math.isnan(nme(pred, target, torch.zeros(4, dtype=torch.bool)))


def test_mpve_known_offset():
    gt = torch.randn(5, 40, 3, dtype=torch.float64)
    pred = gt + torch.tensor([0.003, 0.004, 0.0], dtype=torch.float64)
    assert mpve(pred, gt) == pytest.approx(5.0)
    pred_views = torch.stack([gt, pred], dim=1)  # (F, V, N, 3) against (F, 1, N, 3)
    assert mpve(pred_views, gt[:, None]) == pytest.approx(2.5)


# ----------------------------------------------------------------------------------------------- sequences
def tiny_flame(seed: int = 0):
    """A small random FLAME-format model (72 vertices) + landmark embedding: fast, same code paths."""
    from neuface.flame.model import FLAME_PARENTS, FlameModel, LandmarkEmbedding
    from neuface.render import uv_sphere

    rng = np.random.default_rng(seed)
    verts, faces = uv_sphere(8, 10)
    v = verts.numpy().astype(np.float64) * np.array([0.075, 0.1, 0.085])
    n_v, n_faces = v.shape[0], faces.shape[0]
    reg = rng.random((5, n_v)) * (rng.random((5, n_v)) < 0.2)
    reg[:, 0] += 1e-3
    weights = np.exp(rng.normal(size=(n_v, 5)))
    weights[:, 0] += 3.0
    model = FlameModel(v_template=v, faces=faces.numpy().astype(np.int64),
                       shapedirs=rng.normal(size=(n_v, 3, 400)) * 1e-3, posedirs=rng.normal(size=(n_v, 3, 36)) * 1e-3,
                       J_regressor=reg / reg.sum(1, keepdims=True), weights=weights / weights.sum(1, keepdims=True),
                       parents=np.array(FLAME_PARENTS, dtype=np.int64), num_shape_total=300)
    emb = LandmarkEmbedding(
        static_lmk_faces_idx=rng.integers(0, n_faces, 51), static_lmk_bary_coords=rng.dirichlet([1, 1, 1], 51),
        dynamic_lmk_faces_idx=rng.integers(0, n_faces, (79, 17)),
        dynamic_lmk_bary_coords=rng.dirichlet([1, 1, 1], (79, 17)),
        full_lmk_faces_idx=rng.integers(0, n_faces, 68), full_lmk_bary_coords=rng.dirichlet([1, 1, 1], 68))
    return model, emb


def tiny_flame_files(directory) -> list:
    """Write :func:`tiny_flame` as FLAME .pkl + embedding .npy; returns the CLI arguments --flame/--embedding."""
    from neuface.flame.io import write_flame_pickle, write_landmark_embedding

    model, emb = tiny_flame()
    directory.mkdir(parents=True, exist_ok=True)
    write_flame_pickle(model, directory / "model.pkl")
    write_landmark_embedding(emb, directory / "emb.npy")
    return ["--flame", directory / "model.pkl", "--embedding", directory / "emb.npy"]


@pytest.fixture(scope="module")
def flame():
    from neuface.flame import FlameLayer

    model, emb = tiny_flame()
    return FlameLayer(model, emb, n_shape=100, n_exp=50, dtype=torch.float64)


def _random_fit(rng: np.random.Generator, n_f: int, n_v: int) -> dict[str, np.ndarray]:
    return {
        "shape": rng.normal(size=100) * 0.5,
        "expression": rng.normal(size=(n_f, n_v, 50)) * 0.5,
        "global_pose": rng.normal(size=(n_f, n_v, 3)) * 0.2,
        "pose": np.concatenate([rng.normal(size=(n_f, n_v, 3)) * 0.05, np.abs(rng.normal(size=(n_f, n_v, 3))) * 0.1,
                                np.zeros((n_f, n_v, 6))], axis=-1),
        "landmarks": rng.uniform(50, 150, size=(n_f, n_v, 68, 2)),
        "landmarks_pred": rng.uniform(50, 150, size=(n_f, n_v, 68, 2)),
        "detected": rng.random((n_f, n_v)) > 0.2,
    }


def test_sequence_metrics_match_direct_flame(tmp_path, flame):
    rng = np.random.default_rng(2)
    n_f, n_v = 7, 3
    p = _random_fit(rng, n_f, n_v)
    path = write_fit_file(tmp_path / "s.h5", sequence="s", annotator="ann", views=["a", "b", "c"], **p)
    gt_path = tmp_path / "gt.npz"
    gt = {"shape": rng.normal(size=100) * 0.5, "expression": rng.normal(size=(n_f + 2, 50)) * 0.5,
          "pose": np.zeros((n_f + 2, 12)), "global_pose": np.zeros((n_f + 2, 3, 3)),
          "landmarks": rng.uniform(50, 150, size=(n_f + 2, 3, 68, 2)), "views": np.array(["c", "a", "b"])}
    np.savez(gt_path, **gt)
    res = sequence_metrics(path, flame, gt_path=gt_path, chunk=2)  # chunk 2: moments cross chunk borders
    assert res["status"] == "ok" and res["n_frames"] == n_f

    f32 = {k: torch.as_tensor(v.astype(np.float32), dtype=torch.float64) for k, v in p.items() if k != "detected"}
    b = n_f * n_v

    def run(global_pose):
        return flame(shape=f32["shape"].expand(b, -1), expression=f32["expression"].reshape(b, -1),
                     pose=f32["pose"].reshape(b, -1), global_pose=global_pose)

    posed = run(f32["global_pose"].reshape(b, 3))
    canon = run(None).vertices.reshape(n_f, n_v, -1, 3)
    lm = posed.landmarks3d.reshape(n_f, n_v, 68, 3)
    vs = posed.vertices.reshape(n_f, n_v, -1, 3)
    ref_l = np.mean([_naive_msi(lm[:, v].numpy()) for v in range(n_v)])
    ref_v = np.mean([msi_3d(vs[:, v]) for v in range(n_v)])
    m = res["metrics"]
    assert m["msi3d_l"] == pytest.approx(ref_l, rel=1e-6)
    assert m["msi3d_v"] == pytest.approx(ref_v, rel=1e-6)
    assert m["cvd"] == pytest.approx(float(cvd(canon).mean()), rel=1e-9)
    assert list(res["per_view"]["cvd"].values()) == pytest.approx(cvd_per_view(canon).tolist(), rel=1e-9)
    assert len(res["per_frame"]["cvd"]) == n_f
    det = torch.as_tensor(p["detected"])
    assert m["nme"] == pytest.approx(nme(torch.as_tensor(p["landmarks_pred"]), torch.as_tensor(p["landmarks"]),
                                         det), rel=1e-5)
    g = torch.as_tensor(gt["expression"][:n_f])
    gv = flame(shape=torch.as_tensor(gt["shape"])[None].expand(n_f, -1), expression=g,
               pose=torch.zeros(n_f, 12, dtype=torch.float64)).vertices
    assert m["mpve"] == pytest.approx(mpve(canon, gv[:, None]), rel=1e-9)
    gl = torch.as_tensor(gt["landmarks"][:n_f][:, [1, 2, 0]])  # GT views matched by name
    assert m["nme_gt"] == pytest.approx(nme(torch.as_tensor(p["landmarks_pred"]), gl), rel=1e-5)


def test_sequence_metrics_monocular_and_failed(tmp_path, flame):
    rng = np.random.default_rng(3)
    p = _random_fit(rng, 5, 1)
    path = write_fit_file(tmp_path / "m.h5", sequence="m", annotator="regress", views=["mono"], **p)
    gt_path = tmp_path / "gt.npz"
    np.savez(gt_path, shape=p["shape"], expression=p["expression"][:, 0], pose=p["pose"][:, 0],
             global_pose=p["global_pose"], landmarks=p["landmarks_pred"], views=np.array(["front"]))
    res = sequence_metrics(path, flame, gt_path=gt_path)
    m = res["metrics"]
    assert m["cvd"] is None and "cvd" not in res["per_view"]
    assert m["mpve"] == pytest.approx(0.0, abs=1e-3)  # GT = fit (float32 rounding only); view mono -> front
    assert m["nme_gt"] == pytest.approx(0.0, abs=1e-4)
    np.savez(gt_path, shape=p["shape"], expression=p["expression"][:, 0], pose=p["pose"][:, 0],
             global_pose=np.zeros((5, 2, 3)), landmarks=np.zeros((5, 2, 68, 2)), views=np.array(["x", "y"]))
    with pytest.raises(NeufaceError, match="do not match"):
        sequence_metrics(path, flame, gt_path=gt_path)
    failed = StageStatus.failed("bad", "fit", "non-finite loss")
    fpath = write_fit_file(tmp_path / "f.h5", sequence="bad", annotator="neuface", views=["mono"], status=failed,
                           **{k: v for k, v in p.items()})
    res = sequence_metrics(fpath, flame)
    assert res["status"] == "failed" and "metrics" not in res and res["reason"] == "non-finite loss"


def _cli(name: str, *argv) -> int:
    """Run a subcommand through neuface.cli.main when registered there, else through its own module."""
    import argparse
    import importlib

    from neuface import cli

    module = {"metrics": "metrics", "report": "report", "landmarks-from-gt": "gtlandmarks"}[name]
    argv = [str(a) for a in argv]
    if module in cli.COMMAND_MODULES:
        return cli.main([name, *argv])
    parser = argparse.ArgumentParser()
    importlib.import_module(f"neuface.cli.{module}").register(parser.add_subparsers())
    args = parser.parse_args([name, *argv])
    return args.func(args)


def test_metrics_cli(tmp_path):
    run_cli = _cli
    flame_args = tiny_flame_files(tmp_path / "model")
    rng = np.random.default_rng(4)
    ok = write_fit_file(tmp_path / "ok.h5", sequence="s1", annotator="neuface", views=["a", "b"],
                        **_random_fit(rng, 6, 2))
    out = tmp_path / "metrics" / "neuface" / "s1.json"
    assert run_cli("metrics", "--fit", ok, *flame_args, "--out", out) == 0
    data = json.loads(out.read_text())
    assert data["status"] == "ok" and data["annotator"] == "neuface" and data["metrics"]["cvd"] > 0
    assert data["metrics"]["mpve"] is None
    bad = write_fit_file(tmp_path / "bad.h5", sequence="s2", annotator="neuface", views=["a"],
                         status=StageStatus.failed("s2", "fit", "diverged"), **_random_fit(rng, 6, 1))
    out2 = tmp_path / "metrics" / "neuface" / "s2.json"
    assert run_cli("metrics", "--fit", bad, *flame_args, "--out", out2) == 0
    data = json.loads(out2.read_text())
    assert data["status"] == "failed" and "metrics" not in data


def test_reads_files_of_the_fitting_stage_writer(tmp_path, flame):
    output = pytest.importorskip("neuface.fitting.output")
    rng = np.random.default_rng(6)
    p = _random_fit(rng, 5, 2)
    p.update(cam=np.tile([8.0, 0, 0], (5, 2, 1)), crop_transforms=np.tile(np.eye(3), (5, 2, 1, 1)))
    meta = output.FitMeta(annotator="neuface", views=["a", "b"], n_frames=5, fps=25.0, encoder_id="x",
                          config_hash="0" * 64, config="{}", flame_sha256="")
    output.write_fit(tmp_path / "w.h5", StageStatus("w", "fit"), meta, p, losses={"total": [2.0, 1.0]})
    ours = write_fit_file(tmp_path / "o.h5", sequence="w", annotator="neuface", views=["a", "b"], **p)
    a, b = sequence_metrics(tmp_path / "w.h5", flame), sequence_metrics(ours, flame)
    assert a["metrics"] == b["metrics"] and a["fit"]["losses_final"] == {"total": 1.0}


@pytest.mark.cuda
def test_sequence_metrics_on_cuda_match_cpu(tmp_path, flame):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    p = _random_fit(np.random.default_rng(7), 6, 3)
    path = write_fit_file(tmp_path / "c.h5", sequence="c", annotator="a", views=["a", "b", "c"], **p)
    cpu = sequence_metrics(path, flame)["metrics"]
    gpu = sequence_metrics(path, flame.to("cuda"))["metrics"]
    flame.to("cpu")
    for key, value in cpu.items():
        assert (value is None and gpu[key] is None) or gpu[key] == pytest.approx(value, rel=1e-6)
