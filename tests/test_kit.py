"""The synthetic kit (a head model that is NOT FLAME): FLAME/DECA file layouts, determinism, a sane mesh,
face-like landmarks and a working rig, read back through the real loaders and ``FlameLayer``."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch

from neuface.flame.io import load_flame_model, load_landmark_embedding
from neuface.flame.layer import FlameLayer
from neuface.synthetic import kit as kit_mod
from neuface.synthetic.head import EYE_VERTICES, HEAD_FACES, HEAD_VERTICES

PKL = kit_mod.FLAME_MODEL_PATH
EMB = kit_mod.LANDMARK_EMBEDDING_PATH


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def kit_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("kit0")
    kit_mod.build_kit(out, seed=0)
    return out


@pytest.fixture(scope="module")
def model(kit_dir):
    return load_flame_model(kit_dir / PKL)


@pytest.fixture(scope="module")
def embedding(kit_dir):
    return load_landmark_embedding(kit_dir / EMB, num_faces=9976)


@pytest.fixture(scope="module")
def layer(model, embedding):
    return FlameLayer(model, embedding, n_shape=100, n_exp=50, dtype=torch.float64)


def _lmk(layer, **kwargs) -> np.ndarray:
    with torch.no_grad():
        out = layer(**{k: torch.as_tensor(v, dtype=torch.float64)[None] for k, v in kwargs.items()})
    return out.landmarks2d[0].numpy()


def _pose(neck=(0, 0, 0), jaw=(0, 0, 0)) -> np.ndarray:
    return np.array([*neck, *jaw, 0, 0, 0, 0, 0, 0], dtype=np.float64)


# ------------------------------------------------------------------------------------- files and determinism


def test_cli_build_is_byte_identical_for_the_same_seed(kit_dir, tmp_path, monkeypatch):
    import neuface.cli as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ("kit",))
    kit_mod._seed_independent_parts.cache_clear()  # regenerate everything, not just the seeded part
    assert cli.main(["kit", "build", "--out", str(tmp_path)]) == 0
    assert _sha(tmp_path / PKL) == _sha(kit_dir / PKL)
    # The .npy holds torch tensors whose legacy pickled storages are keyed by memory address (as in DECA's
    # own file), so its bytes vary between writes; its content must not.
    a, b = load_landmark_embedding(kit_dir / EMB), load_landmark_embedding(tmp_path / EMB)
    for name in a.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_kit_bytes_do_not_depend_on_the_blas_thread_count(kit_dir, tmp_path):
    """Snakemake jobs run with one thread, a shell with all cores: both must write the same model file (shipped
    encoder weights are keyed by its sha256)."""
    import os
    import subprocess
    import sys

    for n in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}
        subprocess.run([sys.executable, "-m", "neuface.cli", "kit", "build", "--out", str(tmp_path / n)], env=env,
                       check=True, capture_output=True)
    assert _sha(tmp_path / "1" / PKL) == _sha(tmp_path / "2" / PKL) == _sha(kit_dir / PKL)


def test_other_seed_gives_other_blendshapes(kit_dir, tmp_path):
    kit_mod.build_kit(tmp_path, seed=1)
    assert _sha(tmp_path / PKL) != _sha(kit_dir / PKL)
    a, b = load_flame_model(kit_dir / PKL), load_flame_model(tmp_path / PKL)
    np.testing.assert_array_equal(a.v_template, b.v_template)  # the mean head does not depend on the seed
    np.testing.assert_array_equal(a.shapedirs[:, :, :15], b.shapedirs[:, :, :15])  # hand-designed columns
    assert not np.allclose(a.shapedirs[:, :, 20:300], b.shapedirs[:, :, 20:300])
    assert json.loads((tmp_path / "kit.json").read_text())["seed"] == 1


def test_manifest_records_seed_version_hashes_and_disclaimer(kit_dir):
    manifest = json.loads((kit_dir / "kit.json").read_text())
    assert manifest["seed"] == 0
    assert manifest["package_version"] == kit_mod.__version__
    assert "NOT FLAME" in manifest["statement"] and "tests and the demo" in manifest["statement"]
    assert set(manifest["files"]) == {PKL, EMB, kit_mod.DECA_CHECKPOINT_PATH}
    for rel, digest in manifest["files"].items():
        assert _sha(kit_dir / rel) == digest


def test_kit_deca_checkpoint_loads_with_the_real_deca_loader(kit_dir):
    """The kit's deca_model.tar goes through the strict DECA loader (weights_only, every key checked)."""
    from neuface.encoders import load_encoder

    encoder = load_encoder("deca", str(kit_dir / kit_mod.DECA_CHECKPOINT_PATH))
    assert encoder.encoder_id.startswith("deca:")


def test_up_to_date_kit_is_kept_and_force_or_damage_rebuilds(kit_dir, model, embedding, tmp_path, monkeypatch):
    shutil.copytree(kit_dir, tmp_path, dirs_exist_ok=True)
    calls = []
    monkeypatch.setattr(kit_mod, "generate", lambda seed: calls.append(seed) or (model, embedding))
    kit_mod.build_kit(tmp_path, seed=0)
    assert calls == []  # same seed, version and files: nothing to do
    kit_mod.build_kit(tmp_path, seed=0, force=True)
    assert calls == [0]
    (tmp_path / EMB).write_bytes(b"damaged")
    assert not kit_mod.kit_is_current(tmp_path, 0)
    kit_mod.build_kit(tmp_path, seed=0)
    assert calls == [0, 0] and kit_mod.kit_is_current(tmp_path, 0)
    assert not kit_mod.kit_is_current(tmp_path, 5)  # another seed is another kit


def test_cli_info_prints_manifest_and_rejects_non_kit(kit_dir, tmp_path, monkeypatch, capsys):
    import neuface.cli as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ("kit",))
    assert cli.main(["kit", "info", str(kit_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["statement"] == kit_mod.STATEMENT
    assert cli.main(["kit", "info", str(tmp_path)]) == 2


def test_real_loaders_give_flame_shapes(model, embedding):
    assert model.v_template.shape == (5023, 3) and model.v_template.dtype == np.float64
    assert model.faces.shape == (9976, 3)
    assert model.shapedirs.shape == (5023, 3, 400) and model.num_shape_total == 300
    assert model.posedirs.shape == (5023, 3, 36)
    assert model.J_regressor.shape == (5, 5023) and model.weights.shape == (5023, 5)
    assert model.parents.tolist() == [-1, 0, 1, 1, 1]
    assert embedding.static_lmk_faces_idx.shape == (51,) and embedding.static_lmk_bary_coords.shape == (51, 3)
    assert embedding.dynamic_lmk_faces_idx.shape == (79, 17)
    assert embedding.dynamic_lmk_bary_coords.shape == (79, 17, 3)
    assert embedding.full_lmk_faces_idx.shape == (68,) and embedding.full_lmk_bary_coords.shape == (68, 3)
    for bary in (embedding.static_lmk_bary_coords, embedding.dynamic_lmk_bary_coords, embedding.full_lmk_bary_coords):
        assert bary.min() >= -1e-9 and np.allclose(bary.sum(-1), 1.0)


def test_raw_pickle_has_chumpy_objects_and_sparse_regressor(kit_dir):
    from neuface.flame.safe_pickle import restricted_loads

    raw = (kit_dir / PKL).read_bytes()
    assert b"chumpy" in raw and b"scipy.sparse" in raw and b"csc_matrix" in raw
    data = restricted_loads(raw)
    assert {"v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table"} <= set(data)
    assert type(data["shapedirs"]).__name__.endswith("Ch") and type(data["J_regressor"]).__name__.endswith("csc_matrix")


# ------------------------------------------------------------------------------------------ mesh and rig


def test_mesh_is_a_clean_open_disc_plus_two_closed_outward_eyeballs(model):
    v, f = model.v_template, model.faces
    tri = v[f]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (0.5 * np.linalg.norm(normals, axis=1)).min() > 1e-9  # no degenerate triangle (m^2)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2} and (counts == 1).sum() == 60
    boundary = np.unique(uniq[counts == 1])
    assert boundary.size == 60 and np.ptp(v[boundary, 1]) < 1e-6 and v[boundary, 1].max() < -0.15  # the neck cut
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # consistently wound
    head = slice(0, HEAD_FACES)
    centroid = v[:HEAD_VERTICES].mean(0)
    assert (np.einsum("ij,ij->i", normals[head], tri[head].mean(1) - centroid) > 0).mean() > 0.97
    for side in (0, 1):
        lo = HEAD_VERTICES + side * EYE_VERTICES
        sel = np.nonzero((f >= lo).all(1) & (f < lo + EYE_VERTICES).all(1))[0]
        assert sel.size == 338
        assert np.einsum("ij,ij->i", tri[sel, 0], np.cross(tri[sel, 1], tri[sel, 2])).sum() > 0  # outward volume


def test_head_has_human_size_and_layout(model):
    v = model.v_template[:HEAD_VERTICES]
    width = np.ptp(v[:, 0])
    assert 0.14 < width < 0.19
    face = v[v[:, 2] > 0.03]
    assert 0.10 < face[:, 2].max() < 0.13  # nose tip
    assert v[:, 1].max() > 0.1 and v[:, 1].min() < -0.15  # crown above, neck below the origin
    np.testing.assert_allclose(model.v_template[:, 0].sum(), 0.0, atol=1e-9)  # mirror symmetric


def test_skinning_weights_and_regressor(model):
    w = model.weights
    assert w.min() >= 0 and np.allclose(w.sum(1), 1.0)
    np.testing.assert_allclose(model.J_regressor.sum(1), 1.0)
    assert model.J_regressor.min() >= 0 and ((model.J_regressor > 0).sum(1) <= 171).all()
    joints = model.J_regressor @ model.v_template
    assert joints[1, 1] > joints[0, 1]  # neck above the global joint
    assert joints[3, 0] > 0 > joints[4, 0] and joints[3, 2] > 0.05  # left eye at +x, eyes at the front
    assert np.allclose(w[HEAD_VERTICES:HEAD_VERTICES + EYE_VERTICES, 3], 1.0)
    crown = int(np.argmax(model.v_template[:HEAD_VERTICES, 1]))
    assert w[crown, 1] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- landmarks


def test_zero_pose_landmarks_are_in_ibug_arrangement(layer):
    lmk = _lmk(layer, pose=_pose())
    x, y, z = lmk[:, 0], lmk[:, 1], lmk[:, 2]
    assert x[36] < x[39] < x[42] < x[45]  # eye corners left to right in the image
    assert int(np.argmax(z[17:])) + 17 == 30  # nose tip is the most protruding inner point
    eyes, nose, mouth = y[36:48].mean(), y[31:36].mean(), y[48:68].mean()
    assert mouth < nose < eyes < y[17:27].mean()  # mouth below nose below eyes below brows
    assert y[8] < y[57] < y[66] < y[62] < y[51]
    assert x[0] < x[17:68].min() and x[16] > x[17:68].max()  # contour spans the face width
    assert np.all(np.diff(x[:9]) > 0) and np.all(np.diff(x[8:17]) > 0)
    np.testing.assert_allclose(lmk[16::-1, 0], -lmk[:17, 0], atol=1e-3)  # symmetric frontal contour
    assert 0.11 < x[16] - x[0] < 0.18 and 0.08 < y[27] - y[8] < 0.16


def test_jaw_opens_the_mouth(layer):
    closed = _lmk(layer, pose=_pose())
    opened = _lmk(layer, pose=_pose(jaw=(0.25, 0, 0)))
    gap = lambda l: np.linalg.norm(l[62] - l[66])  # noqa: E731
    assert gap(opened) > gap(closed) + 0.01
    assert opened[8, 1] < closed[8, 1] - 0.003
    np.testing.assert_allclose(opened[17:27], closed[17:27], atol=1e-9)  # brows and eyes stay
    np.testing.assert_allclose(opened[36:48], closed[36:48], atol=1e-9)
    np.testing.assert_allclose(opened[27:36], closed[27:36], atol=1e-4)  # the nose hardly moves


def test_expression_changes_the_mouth_only(layer):
    neutral = _lmk(layer, pose=_pose())
    exp = np.zeros(50)
    exp[0] = 2.0
    moved = _lmk(layer, expression=exp, pose=_pose())
    delta = np.linalg.norm(moved - neutral, axis=1)
    assert delta[[57, 66]].min() > 0.003 and delta[17:27].max() < 1e-4
    smile = np.zeros(50)
    smile[1] = 2.0
    s = _lmk(layer, expression=smile, pose=_pose())
    assert s[48, 1] > neutral[48, 1] + 0.002 and s[54, 1] > neutral[54, 1] + 0.002  # mouth corners up


def test_dynamic_contour_follows_yaw_symmetrically(layer, embedding, model):
    a = math.radians(30.0)
    left = _lmk(layer, global_pose=np.array([0.0, a, 0.0]))
    right = _lmk(layer, global_pose=np.array([0.0, -a, 0.0]))
    assert not np.array_equal(embedding.dynamic_lmk_faces_idx[30], embedding.dynamic_lmk_faces_idx[69])
    np.testing.assert_allclose(left[16::-1, 0], -right[:17, 0], atol=3e-3)  # mirror images
    assert not np.allclose(left[:17], _lmk(layer, global_pose=np.array([0.0, a, 0.0]) * 0.1)[:17], atol=1e-3)
    with torch.no_grad():
        verts = layer(global_pose=torch.tensor([[0.0, a, 0.0]], dtype=torch.float64)).vertices[0].numpy()
    face = verts[:HEAD_VERTICES][verts[:HEAD_VERTICES, 2] > -0.02]
    # Turned towards +x: the +x contour (9..16) runs along the silhouette of that side of the face.
    for i in (12, 13, 14):
        band = face[np.abs(face[:, 1] - left[i, 1]) < 0.004]
        assert left[i, 0] > band[:, 0].max() - 0.006
