"""NeuFaceH5 reader: clip index, slices, FLAME round trip, DataLoader workers, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neuface.dataset.fake import random_flame_model, synthetic_fit_arrays, write_fit_file
from neuface.dataset.filter import FilterThresholds, filter_fits, write_manifest
from neuface.dataset.pack import pack_split, sha256_file
from neuface.dataset.reader import NeuFaceH5
from neuface.errors import NeufaceError
from neuface.flame import FlameLayer
from neuface.flame.io import write_flame_pickle, write_landmark_embedding

FRAMES = {"a": 23, "b": 40, "c": 5}
VIEWS = {"a": ["front"], "b": ["front", "left_30", "right_30"], "c": ["front", "top"]}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reader")
    model, emb = random_flame_model(seed=5)
    flame = write_flame_pickle(model, tmp / "flame.pkl")
    emb_path = write_landmark_embedding(emb, tmp / "emb.npy")
    arrays, paths = {}, []
    for i, (seq, n) in enumerate(FRAMES.items()):
        arrays[seq] = synthetic_fit_arrays(n, len(VIEWS[seq]), seed=i)
        paths.append(write_fit_file(tmp / "fits" / f"{seq}.h5", seq, arrays[seq], views=VIEWS[seq],
                                    flame_sha256=sha256_file(flame)))
    th = FilterThresholds()
    manifest = write_manifest(filter_fits(paths, dict.fromkeys(FRAMES, "train"), "neuface", th),
                              tmp / "m.tsv", th, "neuface")
    out = tmp / "train.h5"
    pack_split(manifest, "train", out, flame=flame)
    return {"path": out, "arrays": arrays, "model": model, "emb": emb, "flame": flame, "emb_path": emb_path}


def test_clip_index_and_slices(packed):
    ds = NeuFaceH5(packed["path"], clip_len=8, stride=5)
    expected = [(s, v, st) for s in sorted(FRAMES) for v in VIEWS[s]
                for st in range(0, FRAMES[s] - 8 + 1, 5)]
    assert ds.clips() == expected and len(ds) == len(expected)  # 'c' (5 frames) is too short
    for i in (0, 5, len(ds) - 1):
        item = ds[i]
        seq, view, st = expected[i]
        vi = VIEWS[seq].index(view)
        a = packed["arrays"][seq]
        for key in ("expression", "global_pose", "pose", "cam", "landmarks", "landmarks_pred", "crop_transforms"):
            np.testing.assert_allclose(item[key].numpy(), a[key][st:st + 8, vi], rtol=1e-6, err_msg=key)
        assert item["detected"].dtype == torch.bool and item["detected"].shape == (8,)
        assert item["frame_indices"].tolist() == list(range(st, st + 8))
        assert item["shape"].shape == (100,) and item["expression"].dtype == torch.float32
        assert (item["sequence"], item["view"], item["start"]) == (seq, view, st)
    with pytest.raises(IndexError):
        ds[len(ds)]
    only = NeuFaceH5(packed["path"], clip_len=4, views=["top"])
    assert {v for _, v, _ in only.clips()} == {"top"} and len(only) == 1
    whole = NeuFaceH5(packed["path"], clip_len=None)
    assert len(whole) == sum(len(v) for v in VIEWS.values())
    assert whole[0]["expression"].shape == (FRAMES["a"], 50)


def test_flame_round_trip_equals_direct_layer(packed):
    """params -> fit -> HDF5 -> reader -> FlameLayer == FlameLayer on the original params (float64)."""
    layer = FlameLayer(packed["model"], packed["emb"], n_shape=100, n_exp=50, dtype=torch.float64)
    ds = NeuFaceH5(packed["path"], clip_len=6, stride=6, with_vertices=True, flame=layer, dtype=torch.float64)
    a = packed["arrays"]["b"]
    i = ds.clips().index(("b", "left_30", 12))
    item = ds[i]
    direct = layer(
        shape=torch.from_numpy(a["shape"]).double().expand(6, -1),
        expression=torch.from_numpy(a["expression"][12:18, 1]).double(),
        global_pose=torch.from_numpy(a["global_pose"][12:18, 1]).double(),
        pose=torch.from_numpy(a["pose"][12:18, 1]).double(),
    )
    assert item["vertices"].shape == (6, packed["model"].num_vertices, 3)
    torch.testing.assert_close(item["vertices"], direct.vertices, rtol=0, atol=1e-12)
    torch.testing.assert_close(item["landmarks3d"], direct.landmarks3d, rtol=0, atol=1e-12)
    # from file paths too (float32 layer), the same up to float32 rounding
    ds32 = NeuFaceH5(packed["path"], clip_len=6, stride=6, with_vertices=True, flame=packed["flame"],
                     embedding=packed["emb_path"])
    torch.testing.assert_close(ds32[i]["vertices"].double(), direct.vertices, rtol=1e-4, atol=1e-6)


def test_dataloader_with_workers_matches_serial(packed):
    ds = NeuFaceH5(packed["path"], clip_len=8, stride=4)
    _ = ds[0]  # the parent holds an open handle before the workers fork
    serial = [ds[i]["expression"] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    got = torch.cat([b["expression"] for b in batches])
    torch.testing.assert_close(got, torch.stack(serial))
    assert batches[0]["detected"].shape == (3, 8) and isinstance(batches[0]["sequence"], list)
    ds.close()


def test_pickle_drops_the_handle(packed):
    ds = NeuFaceH5(packed["path"], clip_len=8)
    _ = ds[0]
    assert ds._file is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None
    torch.testing.assert_close(clone[1]["cam"], ds[1]["cam"])
    with NeuFaceH5(packed["path"], clip_len=8) as ctx:
        _ = ctx[0]
    assert ctx._file is None


def test_reader_errors(packed, tmp_path):
    with pytest.raises(NeufaceError, match="flame"):
        NeuFaceH5(packed["path"], with_vertices=True)
    small = FlameLayer(packed["model"], None, n_shape=10, n_exp=5)
    with pytest.raises(NeufaceError, match="n_shape"):
        NeuFaceH5(packed["path"], with_vertices=True, flame=small)
    with pytest.raises(NeufaceError, match="not a neuface.dataset"):
        NeuFaceH5(write_fit_file(tmp_path / "f.h5", "f", synthetic_fit_arrays(3)))
    with pytest.raises(NeufaceError, match="cannot open"):
        NeuFaceH5(tmp_path / "none.h5")
    with pytest.raises(NeufaceError, match="clip_len"):
        NeuFaceH5(packed["path"], clip_len=0)


def _damaged(packed, tmp_path, damage):
    """A copy of the packed file with ``damage(h5py.File)`` applied (the file stays a valid HDF5 file)."""
    import shutil

    import h5py

    path = tmp_path / f"damaged{len(list(tmp_path.glob('damaged*.h5')))}.h5"
    shutil.copyfile(packed["path"], path)
    with h5py.File(path, "r+") as f:
        damage(f)
    return path


def test_corrupted_file_errors_name_the_file_and_the_object(packed, tmp_path):
    """A file whose datasets, groups or attributes were deleted or damaged: NeufaceError naming the path and
    what is missing, never a bare KeyError (nor an IndexError that would end a `for` loop silently)."""
    import h5py

    path = _damaged(packed, tmp_path, lambda f: f["sequences/b"].__delitem__("expression"))
    ds = NeuFaceH5(path, clip_len=8)  # the index is built from attributes: opening still works
    i = [s for s, _, _ in ds.clips()].index("b")
    with pytest.raises(NeufaceError, match=rf"{path}: /sequences/b/expression is missing"):
        ds[i]
    assert ds[0]["sequence"] == "a"  # other sequences still read
    ds.close()
    path = _damaged(packed, tmp_path, lambda f: f["sequences/a"].attrs.__delitem__("n_frames"))
    with pytest.raises(NeufaceError, match=rf"{path}: attribute 'n_frames' of /sequences/a is missing"):
        NeuFaceH5(path)
    path = _damaged(packed, tmp_path, lambda f: f.__delitem__("sequences"))
    with pytest.raises(NeufaceError, match=rf"{path}: /sequences is missing"):
        NeuFaceH5(path)
    path = _damaged(packed, tmp_path, lambda f: f.attrs.__delitem__("n_shape"))
    with pytest.raises(NeufaceError, match=rf"{path}: attribute 'n_shape' of / is missing"):
        NeuFaceH5(path)

    def shorten(f):  # a dataset with fewer frames than its group's n_frames
        cam = f["sequences/b/cam"][:10]
        del f["sequences/b/cam"]
        f["sequences/b"].create_dataset("cam", data=cam)

    path = _damaged(packed, tmp_path, shorten)
    ds = NeuFaceH5(path, clip_len=8)
    with pytest.raises(NeufaceError, match=rf"{path}: /sequences/b/cam has 10 frames"):
        ds[ds.clips().index(("b", "front", 8))]
    ds.close()
    # damaged bytes inside a compressed chunk: h5py's OSError names neither the file nor the dataset
    path = tmp_path / "bytes.h5"
    path.write_bytes(packed["path"].read_bytes())
    with h5py.File(path, "r") as f:
        info = f["sequences/a/pose"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    ds = NeuFaceH5(path, clip_len=8)
    with pytest.raises(NeufaceError, match=rf"{path}: cannot read /sequences/a/pose \(corrupted file\?\)"):
        ds[0]
    ds.close()
