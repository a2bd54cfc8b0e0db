"""FLAME / landmark-embedding file I/O: round trips, real-file layout, and refusal of malicious pickles."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import pickletools
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from neuface.dataset.fake import random_landmark_embedding
from neuface.errors import AssetMissingError, ModelFormatError, UnsafePickleError
from neuface.flame import (
    FlameLayer,
    FlameModel,
    LandmarkEmbedding,
    load_flame_model,
    load_landmark_embedding,
    restricted_loads,
    write_flame_npz,
    write_flame_pickle,
    write_landmark_embedding,
)
from neuface.flame.io import flame_model_from_dict
from neuface.flame.safe_pickle import ChumpyObject, Py2Pickler

MODEL_KEYS = ("v_template", "faces", "shapedirs", "posedirs", "J_regressor", "weights", "parents")
EMB_KEYS = (
    "static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
    "full_lmk_faces_idx", "full_lmk_bary_coords",
)


def make_model(n_verts: int = 40, n_cols: int = 16, num_shape_total: int = 10, seed: int = 0) -> FlameModel:
    rng = np.random.default_rng(seed)
    j_reg = rng.random((5, n_verts)) * (rng.random((5, n_verts)) < 0.2)
    j_reg[:, 0] += 0.1
    weights = rng.random((n_verts, 5))
    return FlameModel(
        v_template=rng.normal(size=(n_verts, 3)),
        faces=rng.integers(0, n_verts, (70, 3)),
        shapedirs=rng.normal(size=(n_verts, 3, n_cols)),
        posedirs=rng.normal(size=(n_verts, 3, 36)),
        J_regressor=j_reg / j_reg.sum(1, keepdims=True),
        weights=weights / weights.sum(1, keepdims=True),
        parents=np.array([-1, 0, 1, 1, 1]),
        num_shape_total=num_shape_total,
    ).validate()


def make_embedding(n_faces: int = 70, seed: int = 1) -> LandmarkEmbedding:
    return random_landmark_embedding(n_faces, np.random.default_rng(seed))


def assert_models_equal(a: FlameModel, b: FlameModel) -> None:
    for key in MODEL_KEYS:
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.num_shape_total == b.num_shape_total


def raw_dict(model: FlameModel) -> dict:
    return {
        "v_template": model.v_template, "f": model.faces, "shapedirs": model.shapedirs,
        "posedirs": model.posedirs, "J_regressor": model.J_regressor, "weights": model.weights,
        "kintree_table": np.stack([model.parents, np.arange(5)]),
    }


# ----------------------------------------------------------------------------- FLAME model files


def test_pickle_round_trip_has_real_flame_layout(tmp_path):
    model = make_model()
    path = write_flame_pickle(model, tmp_path / "generic_model.pkl")
    data = path.read_bytes()
    assert data[:2] == b"\x80\x02"  # protocol 2, as the Python-2 original
    assert b"chumpy" in data and b"scipy.sparse" in data
    globals_used = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    expected_globals = {"chumpy.ch Ch", "scipy.sparse.csc csc_matrix", "numpy.core.multiarray _reconstruct"}
    assert expected_globals <= globals_used
    raw = restricted_loads(data)
    keys = {"f", "v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "J"}
    assert keys <= set(raw)
    assert raw["bs_style"] == "lbs" and raw["kintree_table"].shape == (2, 5)
    assert raw["kintree_table"][0, 0] == 2**32 - 1 and raw["shapedirs"].state["x"].shape == (40, 3, 16)
    assert_models_equal(load_flame_model(path), model)


def test_pickle_without_chumpy_and_flame_sized_columns(tmp_path):
    model = make_model(n_cols=400, num_shape_total=300)
    path = write_flame_pickle(model, tmp_path / "m.pkl", chumpy_style=False)
    data = path.read_bytes()
    assert b"chumpy" not in data and b"num_shape_total" not in data  # 300 + 100 is inferred
    loaded = load_flame_model(path)
    assert loaded.num_shape_total == 300 and loaded.num_expression_total == 100
    assert_models_equal(loaded, model)


def test_modern_pickle_protocols_load(tmp_path):
    """FLAME 2023-style files: plain numpy arrays (``_frombuffer`` at protocol 5) and scipy.sparse._csc."""
    model = make_model(n_cols=400, num_shape_total=300)
    raw = raw_dict(model)
    raw |= {"J_regressor": sp.csc_matrix(model.J_regressor), "f": model.faces.astype(np.uint32)}
    for protocol in (2, 4, 5):
        path = tmp_path / f"flame2023_p{protocol}.pkl"
        path.write_bytes(pickle.dumps(raw, protocol=protocol))
        assert_models_equal(load_flame_model(path), model)


def test_chumpy_select_objects_are_resolved(tmp_path):
    model = make_model()
    flat = model.shapedirs.reshape(-1)
    select = ChumpyObject.named("chumpy.reordering", "Select")(
        {"a": ChumpyObject.ch(flat[::-1].copy()), "idxs": np.arange(flat.size)[::-1].copy(),
         "preferred_shape": model.shapedirs.shape}
    )
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(raw_dict(model) | {"shapedirs": select})
    path = tmp_path / "select.pkl"
    path.write_bytes(buf.getvalue())
    assert b"chumpy.reordering" in buf.getvalue()
    assert np.array_equal(load_flame_model(path, num_shape_total=10).shapedirs, model.shapedirs)


def test_npz_round_trip(tmp_path):
    model = make_model()
    path = write_flame_npz(model, tmp_path / "model.npz")
    assert_models_equal(load_flame_model(path), model)


def test_num_shape_total_needed_for_unusual_column_counts():
    model = make_model()
    with pytest.raises(ModelFormatError, match="num_shape_total"):
        flame_model_from_dict(raw_dict(model))
    assert flame_model_from_dict(raw_dict(model), num_shape_total=10).num_shape_total == 10


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("weights", None),  # missing
        ("shapedirs", np.zeros((40, 16))),
        ("posedirs", np.zeros((40, 3, 35))),
        ("J_regressor", np.zeros((4, 40))),
        ("f", np.full((70, 3), 0.5)),
        ("kintree_table", np.zeros((3, 5), dtype=np.int64)),
    ],
)
def test_wrong_key_or_shape_names_the_key(tmp_path, key, bad):
    raw = raw_dict(make_model())
    if bad is None:
        del raw[key]
    else:
        raw[key] = bad
    path = tmp_path / "bad.npz"
    np.savez(path, **raw, num_shape_total=10)
    with pytest.raises(ModelFormatError, match=key):
        load_flame_model(path)


def test_not_a_dict_and_missing_files(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ModelFormatError, match="dict"):
        load_flame_model(path)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(ModelFormatError, match="junk.pkl"):
        load_flame_model(tmp_path / "junk.pkl")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ModelFormatError, match="broken.npz"):
        load_flame_model(tmp_path / "broken.npz")
    with pytest.raises(AssetMissingError, match="nope.pkl"):
        load_flame_model(tmp_path / "nope.pkl")
    with pytest.raises(AssetMissingError, match="nope.npy"):
        load_landmark_embedding(tmp_path / "nope.npy")
    with pytest.raises(AssetMissingError):
        FlameLayer.from_files(tmp_path / "nope.pkl")


# ----------------------------------------------------------------------------- landmark embedding


def test_embedding_round_trip_in_deca_layout(tmp_path):
    emb = make_embedding()
    path = write_landmark_embedding(emb, tmp_path / "landmark_embedding.npy")
    with open(path, "rb") as fh:
        assert np.lib.format.read_magic(fh) == (1, 0)
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        content = restricted_loads(fh.read(), allow_torch=True)[()]
    assert shape == () and dtype == np.dtype(object)
    assert isinstance(content["dynamic_lmk_faces_idx"], torch.Tensor)
    assert isinstance(content["dynamic_lmk_bary_coords"], torch.Tensor)
    assert isinstance(content["static_lmk_faces_idx"], np.ndarray)
    assert content["full_lmk_faces_idx"].shape == (1, 68)
    assert content["full_lmk_bary_coords"].shape == (1, 68, 3)
    loaded = load_landmark_embedding(path, num_faces=70)
    for key in EMB_KEYS:
        assert np.array_equal(getattr(loaded, key), getattr(emb, key)), key
    assert loaded.full_lmk_faces_idx.dtype == np.int64 and loaded.static_lmk_bary_coords.dtype == np.float64


def test_embedding_errors_name_the_key(tmp_path):
    emb = make_embedding()
    emb.dynamic_lmk_bary_coords = emb.dynamic_lmk_bary_coords[:78]
    holder = np.empty((), dtype=object)
    holder[()] = {k: getattr(emb, k) for k in EMB_KEYS}
    np.save(tmp_path / "bad.npy", holder, allow_pickle=True)
    with pytest.raises(ModelFormatError, match="dynamic_lmk_bary_coords"):
        load_landmark_embedding(tmp_path / "bad.npy")
    del holder[()]["static_lmk_faces_idx"]
    np.save(tmp_path / "bad2.npy", holder, allow_pickle=True)
    with pytest.raises(ModelFormatError, match="static_lmk_faces_idx"):
        load_landmark_embedding(tmp_path / "bad2.npy")
    np.save(tmp_path / "plain.npy", np.zeros((3, 3)))
    with pytest.raises(ModelFormatError, match="object array"):
        load_landmark_embedding(tmp_path / "plain.npy")
    write_landmark_embedding(make_embedding(), tmp_path / "ok.npy")
    with pytest.raises(ModelFormatError, match="faces"):
        load_landmark_embedding(tmp_path / "ok.npy", num_faces=10)


def test_from_files_builds_a_working_layer(tmp_path):
    model, emb = make_model(), make_embedding()
    write_flame_pickle(model, tmp_path / "m.pkl")
    write_landmark_embedding(emb, tmp_path / "e.npy")
    layer = FlameLayer.from_files(tmp_path / "m.pkl", tmp_path / "e.npy", n_shape=5, n_exp=4)
    out = layer(shape=torch.randn(2, 5))
    assert out.landmarks2d.shape == (2, 68, 3) and layer.faces.dtype == torch.long


# ----------------------------------------------------------------------------- malicious pickles


class _Reduce:
    """Pickles as ``func(*args)``: what an attacker puts in a model file."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(target):
    return {
        "os.system": _Reduce(os.system, f"touch {target}"),
        "subprocess": _Reduce(subprocess.check_call, ["touch", str(target)]),
        "builtins.eval": _Reduce(builtins.eval, f"open({str(target)!r}, 'w').close()"),
        "builtins.exec": _Reduce(builtins.exec, f"open({str(target)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("attack", ["os.system", "subprocess", "builtins.eval", "builtins.exec"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_model_loader_refuses_code_execution(tmp_path, attack, protocol):
    target = tmp_path / "pwned"
    evil = _attacks(target)[attack]
    raw = raw_dict(make_model()) | {"shapedirs": evil}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=protocol))
    with pytest.raises(UnsafePickleError) as info:
        load_flame_model(path, num_shape_total=10)
    # the message names module.name as written in the pickle (protocol 2 uses Python-2 module names)
    assert f".{evil.func.__name__}, which is not on the allow-list" in str(info.value)
    assert not target.exists()


def test_code_hidden_in_chumpy_state_is_refused(tmp_path):
    target = tmp_path / "pwned"
    buf = io.BytesIO()
    evil = ChumpyObject({"x": _attacks(target)["os.system"]})
    Py2Pickler(buf, protocol=2).dump(raw_dict(make_model()) | {"shapedirs": evil})
    path = tmp_path / "evil_ch.pkl"
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafePickleError, match="system"):
        load_flame_model(path, num_shape_total=10)
    assert not target.exists()


@pytest.mark.parametrize("attack", ["os.system", "subprocess", "builtins.eval"])
def test_embedding_loader_refuses_code_execution(tmp_path, attack):
    target = tmp_path / "pwned"
    emb = make_embedding()
    holder = np.empty((), dtype=object)
    holder[()] = {k: getattr(emb, k) for k in EMB_KEYS} | {"static_lmk_faces_idx": _attacks(target)[attack]}
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, holder, allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        load_landmark_embedding(path)
    assert not target.exists()


def test_torch_globals_only_allowed_for_embeddings_and_other_numpy_callables_refused():
    tensor_pickle = pickle.dumps(torch.arange(3), protocol=2)
    assert torch.equal(restricted_loads(tensor_pickle, allow_torch=True), torch.arange(3))
    with pytest.raises(UnsafePickleError, match="torch._utils._rebuild_tensor_v2"):
        restricted_loads(tensor_pickle)
    with pytest.raises(UnsafePickleError, match="numpy.load"):
        restricted_loads(pickle.dumps(_Reduce(np.load, "x.npy"), protocol=2))
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        restricted_loads(pickle.dumps(_Reduce(__import__("_codecs").encode, "abc", "rot13"), protocol=2))
