"""Pack / verify / export: round trip, empty split, truncated files, kills during pack, official npz layout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuface.dataset.export import NPZ_KEYS
from neuface.dataset.fake import random_flame_model, synthetic_fit_arrays, write_fit_file
from neuface.dataset.filter import FilterThresholds, filter_fits, write_manifest
from neuface.dataset.pack import pack_split, sha256_file
from neuface.dataset.schema import DATASET_ARRAYS
from neuface.dataset.verify import verify_file
from neuface.errors import NeufaceError
from neuface.flame.io import write_flame_pickle

SPLITS = {"s0": "train", "s1": "val", "s2": "val", "s3": "val", "bad": "val"}


@pytest.fixture
def cli(monkeypatch):
    import neuface.cli as cli_mod

    mods = tuple(cli_mod.COMMAND_MODULES) + tuple(m for m in ("filter", "pack", "h5")
                                                  if m not in cli_mod.COMMAND_MODULES)
    monkeypatch.setattr(cli_mod, "COMMAND_MODULES", mods)
    return lambda *argv: cli_mod.main([str(a) for a in argv])


@pytest.fixture
def flame_file(tmp_path) -> Path:
    model, _ = random_flame_model(seed=3)
    return write_flame_pickle(model, tmp_path / "flame.pkl")


def make_manifest(tmp_path: Path, flame_sha: str = "0" * 64, n_frames: int = 70) -> tuple[Path, dict]:
    arrays = {}
    paths = []
    for i, seq in enumerate(SPLITS):
        a = synthetic_fit_arrays(n_frames + 10 * i, n_views=1 + i % 3, seed=i)
        if seq == "bad":
            a["shape"] *= 5
        else:
            a["detected"][2] = False
            a["landmarks"][2] = np.nan
        arrays[seq] = a
        views = ["front", "left_30", "right_30"][: 1 + i % 3]
        paths.append(write_fit_file(tmp_path / "fits" / f"{seq}.h5", seq, a, views=views, fps=30.0,
                                    flame_sha256=flame_sha))
    recs = filter_fits(paths, SPLITS, "neuface", FilterThresholds())
    return write_manifest(recs, tmp_path / "manifest.tsv", FilterThresholds(), annotator="neuface"), arrays


def test_pack_verify_round_trip(tmp_path, flame_file, cli):
    manifest, arrays = make_manifest(tmp_path, sha256_file(flame_file))
    out = tmp_path / "dataset" / "neuface" / "val.h5"
    assert cli("pack", "--manifest", manifest, "--split", "val", "--out", out, "--flame", flame_file) == 0
    with h5py.File(out) as f:
        a = f.attrs
        assert a["format"] == "neuface.dataset" and a["split"] == "val" and a["annotator"] == "neuface"
        assert a["n_sequences"] == 3 and sorted(f["sequences"]) == ["s1", "s2", "s3"]  # 'bad' rejected
        assert a["flame_sha256"] == sha256_file(flame_file)
        assert list(a["encoder_ids"]) == ["deca-synthetic"] and len(a["config_hashes"]) == 1
        assert (a["n_shape"], a["n_exp"]) == (100, 50) and a["created"] and a["neuface_version"]
        for seq in ("s1", "s2", "s3"):
            g = f["sequences"][seq]
            for name in arrays[seq]:
                np.testing.assert_array_equal(g[name][()], arrays[seq][name], err_msg=f"{seq}/{name}")
            n = arrays[seq]["expression"].shape[0]
            np.testing.assert_array_equal(g["frame_indices"][()], np.arange(n))
            assert g.attrs["n_frames"] == n and g.attrs["fps"] == 30.0
            assert 0 < g.attrs["nme"] < g.attrs["nme_eye"]  # manifest values: bbox NME, eye-corner NME
            assert len(g.attrs["views"]) == arrays[seq]["expression"].shape[1]
            assert g["expression"].chunks[0] == min(n, 64) and g["expression"].compression == "gzip"
            assert g["expression"].shuffle
            assert set(g.keys()) == set(DATASET_ARRAYS)
    assert verify_file(out).ok, verify_file(out).summary()
    assert cli("h5", "verify", out) == 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_empty_split_is_a_valid_file(tmp_path):
    manifest, _ = make_manifest(tmp_path)
    out = pack_split(manifest, "test", tmp_path / "test.h5")["path"]
    with h5py.File(out) as f:
        assert f.attrs["n_sequences"] == 0 and len(f["sequences"]) == 0
    report = verify_file(out)
    assert report.ok and report.n_sequences == 0


def test_lzf_and_flame_mismatch(tmp_path, flame_file):
    manifest, _ = make_manifest(tmp_path, flame_sha="ab" * 32)
    out = tmp_path / "train.h5"
    pack_split(manifest, "train", out, compression="lzf")
    with h5py.File(out) as f:
        assert f["sequences/s0/cam"].compression == "lzf"
    with pytest.raises(NeufaceError, match="sha256"):
        pack_split(manifest, "train", tmp_path / "x.h5", flame=flame_file)
    assert not (tmp_path / "x.h5").exists()


def test_verify_catches_truncation_and_bad_values(tmp_path, cli):
    manifest, _ = make_manifest(tmp_path)
    out = tmp_path / "val.h5"
    pack_split(manifest, "val", out)
    data = out.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    report = verify_file(trunc)
    assert not report.ok and "truncated" in report.problems[0]
    assert cli("h5", "verify", trunc) == 2
    assert cli("h5", "verify", tmp_path / "missing.h5") == 2
    # a finite-looking file with a NaN parameter and a lying attribute
    with h5py.File(out, "a") as f:
        f["sequences/s1/cam"][0, 0, 0] = np.nan
        f["sequences/s2"].attrs["n_frames"] = 3
        f.attrs["n_sequences"] = 7
    problems = "\n".join(verify_file(out).problems)
    assert "s1/cam: 1 non-finite" in problems and "n_frames=3" in problems and "n_sequences=7" in problems
    assert cli("h5", "verify", out) == 2


def test_failure_inside_pack_leaves_no_file(tmp_path, monkeypatch):
    manifest, _ = make_manifest(tmp_path)
    import neuface.dataset.pack as pack_mod

    calls = []
    real = pack_mod._copy_sequence

    def boom(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(pack_mod, "_copy_sequence", boom)
    out = tmp_path / "out" / "val.h5"
    with pytest.raises(RuntimeError):
        pack_split(manifest, "val", out)
    assert not out.exists() and list(out.parent.iterdir()) == []


_SLOW_PACK = """
import sys, time
import neuface.dataset.pack as p
real = p._write_array
def slow(*a, **k):
    time.sleep(0.05)
    return real(*a, **k)
p._write_array = slow
p.pack_split(sys.argv[1], "val", sys.argv[2])
"""


def test_sigkill_during_pack_leaves_no_file(tmp_path):
    manifest, _ = make_manifest(tmp_path)
    out = tmp_path / "out" / "val.h5"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_PACK, str(manifest), str(out)], env=env)
    try:
        deadline = time.time() + 60
        while not (out.parent.exists() and list(out.parent.glob(".val.h5.*"))):
            assert proc.poll() is None, "pack finished before it could be killed"
            assert time.time() < deadline, "pack never started writing"
            time.sleep(0.02)
        time.sleep(0.2)  # now inside the atomic block, writing sequences slowly
        assert proc.poll() is None, "pack finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    assert list(out.parent.glob(".val.h5.*"))  # only the temporary remains, clearly not the output


def test_export_npz_layout(tmp_path, cli):
    manifest, arrays = make_manifest(tmp_path)
    out = tmp_path / "val.h5"
    pack_split(manifest, "val", out)
    d = tmp_path / "export"
    assert cli("h5", "export", out, "--sequence", "s2", "--out", d, "--view", "left_30") == 0
    with np.load(d / "params.npz") as z:
        assert sorted(z.files) == sorted(NPZ_KEYS)
        n = arrays["s2"]["expression"].shape[0]
        for key, width in NPZ_KEYS.items():
            assert z[key].shape == (n, *width), key
        a = arrays["s2"]
        np.testing.assert_array_equal(z["cam"], a["cam"][:, 1])
        np.testing.assert_array_equal(z["pose"][:, :3], a["global_pose"][:, 1])
        np.testing.assert_array_equal(z["pose"][:, 3:], a["pose"][:, 1, 3:6])  # jaw
        np.testing.assert_array_equal(z["expr"], a["expression"][:, 1])
        np.testing.assert_array_equal(z["shapes"], np.repeat(a["shape"][None], n, 0))
        # landmarks2d in crop NDC: x_crop = A x + b, ndc = (x_crop + 0.5) / 112 - 1
        tf = a["crop_transforms"][0, 1]
        px = a["landmarks"][0, 1].astype(np.float64)
        ref = ((px @ tf[:2, :2].T + tf[:2, 2]) + 0.5) / 112.0 - 1.0
        np.testing.assert_allclose(z["landmarks2d"][0], ref, rtol=1e-5, atol=1e-5)
        assert np.isnan(z["landmarks2d"][2]).all()  # frame 2 had no detection
    assert cli("h5", "export", out, "--sequence", "nope", "--out", d) == 2
    assert cli("h5", "export", out, "--sequence", "s1", "--out", d, "--frames", "0,999") == 2
    assert cli("h5", "export", out, "--sequence", "s1", "--out", d, "--format", "obj") == 2  # needs --flame


def test_export_meshes_obj_ply(tmp_path, cli):
    model, emb = random_flame_model(seed=3)
    flame = write_flame_pickle(model, tmp_path / "flame.pkl")
    from neuface.flame.io import write_landmark_embedding

    emb_path = write_landmark_embedding(emb, tmp_path / "emb.npy")
    manifest, _ = make_manifest(tmp_path, sha256_file(flame))
    out = tmp_path / "val.h5"
    pack_split(manifest, "val", out)
    d = tmp_path / "meshes"
    assert cli("h5", "export", out, "--sequence", "s1", "--out", d, "--format", "obj", "--frames", "0,10,20",
               "--flame", flame, "--embedding", emb_path) == 0
    objs = sorted(d.glob("*.obj"))
    assert [p.name for p in objs] == [f"s1_front_{i:05d}.obj" for i in (0, 10, 20)]  # default view: front
    lines = objs[0].read_text().splitlines()
    assert sum(ln.startswith("v ") for ln in lines) == model.num_vertices
    assert sum(ln.startswith("f ") for ln in lines) == model.faces.shape[0]
    assert np.loadtxt(d / "s1_front_00010_landmarks3d.txt").shape == (68, 3)
    assert cli("h5", "export", out, "--sequence", "s1", "--out", d, "--format", "ply", "--frames", "5",
               "--flame", flame, "--view", "left_30") == 0
    ply = (d / "s1_left_30_00005.ply").read_bytes()
    head, body = ply.split(b"end_header\n", 1)
    assert b"element vertex %d" % model.num_vertices in head
    assert len(body) == model.num_vertices * 12 + model.faces.shape[0] * 13
