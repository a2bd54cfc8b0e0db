"""Regressor fine-tuning (``neuface train regressor``) and its evaluation (``neuface eval-regressor``).

A tiny setting: the synthetic kit, three rendered sequences (one with two views, one cut into two shots) packed
from perfect annotations, the shipped builtin encoder (trained on this kit) and a few optimizer steps.
"""

from __future__ import annotations

import json
import logging
import shutil

import h5py
import numpy as np
import pytest
import torch
from train_helpers import annotation_arrays, build_kit, pack_sequences, write_sequence, write_sheet

from neuface.dataset.reader import NeuFaceH5
from neuface.encoders import load_encoder, write_emoca_checkpoint
from neuface.encoders.builtin import read_builtin_config
from neuface.encoders.checkpoint import file_sha256
from neuface.encoders.shipped import SHIPPED_DIR
from neuface.errors import NeufaceError, ShapeError
from neuface.fitting.checkpoint import Preempted
from neuface.geometry.crop import pixels_to_crop_ndc
from neuface.train.losses3d import landmark3d_loss, mesh_loss
from neuface.train.regressor import CURVE_COLUMNS, StepBatches, finetune_regressor, validation_losses
from neuface.train.regressor_data import RegressorFrames
from neuface.train.regressor_output import lineage_path
from neuface.train.regressor_settings import RegressorSettings

BUILTIN = SHIPPED_DIR / "builtin-kit-seed0.pt"
FAST = {"batch_size": 4, "device": "cpu", "progress": False, "lr": 1e-4}


# ------------------------------------------------------------------------------------------------ 3D losses
def naive_msd(pred, target, weights):
    num = den = 0.0
    for b in range(pred.shape[0]):
        if weights[b] == 0:
            continue
        per = sum(float(((pred[b, n] - target[b, n]) ** 2).sum()) for n in range(pred.shape[1])) / pred.shape[1]
        num, den = num + float(weights[b]) * per, den + float(weights[b])
    return num / den if den else 0.0


@pytest.mark.parametrize("fn,n", [(mesh_loss, 37), (landmark3d_loss, 68)])
def test_3d_losses_match_a_naive_loop_and_mask_invalid_samples(fn, n):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(5, n, 3, generator=g), torch.randn(5, n, 3, generator=g)
    weights = torch.tensor([1.0, 0.0, 2.5, 0.5, 1.0])
    target[1] = float("nan")  # an excluded sample may hold anything
    assert float(fn(pred, target, weights)) == pytest.approx(naive_msd(pred, target, weights), rel=1e-5)
    mask = torch.tensor([True, False, True, True, False])
    assert float(fn(pred, target, mask)) == pytest.approx(naive_msd(pred, target, mask.float()), rel=1e-5)
    full = target.clone()
    full[1] = 0.0
    assert float(fn(pred, full)) == pytest.approx(naive_msd(pred, full, torch.ones(5)), rel=1e-5)
    p = pred.clone().requires_grad_(True)
    fn(p, target, weights).backward()
    assert torch.isfinite(p.grad).all() and p.grad[1].abs().sum() == 0
    assert float(fn(pred, target, torch.zeros(5))) == 0.0


def test_3d_losses_gradcheck_and_errors():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 0.3, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: mesh_loss(p, target, w), (pred,))
    assert torch.autograd.gradcheck(lambda p: landmark3d_loss(p, target), (pred,))
    with pytest.raises(ShapeError, match="target"):
        mesh_loss(pred, target[:, :5])
    with pytest.raises(ShapeError, match=">= 0"):
        mesh_loss(pred, target, -w)
    with pytest.raises(ShapeError, match="floating"):
        landmark3d_loss(pred.long(), target)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    kit = build_kit(root / "kit")
    seqs = [write_sequence(root, kit["layer"], "s0", seed=0, views=("front", "left_30")),
            write_sequence(root, kit["layer"], "s1", seed=1),
            write_sequence(root, kit["layer"], "s2", seed=2)]
    cut = annotation_arrays(seqs[2])
    cut["shots"] = np.array([[0, 2], [2, 4]], dtype=np.int64)
    cut["shape_shots"] = np.stack([cut["shape"], cut["shape"] * 0.5]).astype(np.float32)
    dataset = pack_sequences(root, seqs, kit["flame"], arrays={"s2": cut})
    held_out = write_sequence(root, kit["layer"], "h0", seed=7)
    return {"root": root, "kit": kit, "seqs": seqs, "dataset": dataset, "crops": root / "crops",
            "held_out": held_out}


def run(setup, out, settings=None, **kwargs):
    kw = {"encoder_kind": "builtin", "encoder_weights": BUILTIN, **kwargs}
    return finetune_regressor(settings or RegressorSettings(steps=3, **FAST), [kw.pop("dataset", setup["dataset"])],
                              setup["crops"], setup["kit"]["flame"], setup["kit"]["embedding"], out=out, **kw)


def outputs(encoder, x):
    with torch.no_grad():
        return vars(encoder.eval()(x))


# ------------------------------------------------------------------------------------------------ data
def test_items_are_every_view_and_frame_with_the_packed_targets(setup):
    data = RegressorFrames([setup["dataset"]], setup["crops"])
    assert len(data) == 4 * 2 + 4 + 4
    packed = NeuFaceH5(setup["dataset"], clip_len=None, split_shots=False, dtype=torch.float64)
    clips = {(s, v): packed[i] for i, (s, v, _) in enumerate(packed.clips())}
    for i in range(len(data)):
        name, view, frame = data.keys[i]
        item, ref = data[i], clips[(name, view)]
        for key in ("expression", "global_pose", "pose", "cam"):
            torch.testing.assert_close(item[key], ref[key][frame].float(), rtol=0, atol=0)
        torch.testing.assert_close(item["shape"], ref["shapes"][frame].float(), rtol=0, atol=0)
        ndc = pixels_to_crop_ndc(ref["landmarks"][frame][None], ref["crop_transforms"][frame][None], 64)[0]
        torch.testing.assert_close(item["landmarks"], ndc.float(), rtol=0, atol=1e-6)
        assert item["landmarks_valid"].all() and item["valid"]
        with h5py.File(setup["crops"] / f"{name}.h5") as f:
            crop = torch.from_numpy(f[f"views/{view}/crops"][frame]).permute(2, 0, 1).float() / 255
        assert item["image"].shape == (3, 224, 224) and 0 <= float(item["image"].min()) <= 1
        small = torch.nn.functional.interpolate(item["image"][None], size=64, mode="area")[0]
        assert float((small - crop).abs().mean()) < 0.05
    # the cut sequence: frames of shot 1 carry that shot's β
    s2 = [data[i]["shape"] for i in range(len(data)) if data.keys[i][0] == "s2"]
    torch.testing.assert_close(s2[3], s2[0] * 0.5)


def test_stale_or_missing_crops_are_clear_errors(setup, tmp_path, caplog):
    crops = tmp_path / "crops"
    shutil.copytree(setup["crops"], crops)
    (crops / "s1.h5").unlink()
    with pytest.raises(NeufaceError, match="s1"):
        RegressorFrames([setup["dataset"]], crops)
    with caplog.at_level(logging.WARNING):
        assert len(RegressorFrames([setup["dataset"]], crops, skip_missing=True)) == 4 * 2 + 4
    assert "s1" in caplog.text
    with h5py.File(crops / "s0.h5", "a") as f:
        f["views/left_30/transforms"][2, 0, 2] += 1.0
    with pytest.raises(NeufaceError, match="stale crops for sequence 's0'.*left_30.*frame 2"):
        RegressorFrames([setup["dataset"]], crops, skip_missing=True)


def test_step_batches_depend_only_on_seed_and_step():
    full = list(StepBatches(10, 4, seed=3, start=0, stop=6))
    assert list(StepBatches(10, 4, seed=3, start=2, stop=6)) == full[2:]
    flat = [i for b in full for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert list(StepBatches(10, 4, seed=4, start=0, stop=6)) != full


# ------------------------------------------------------------------------------------------------ training
def test_builtin_output_loads_strictly_round_trips_and_records_lineage(setup, tmp_path):
    res = run(setup, tmp_path / "ft.pt", curve=tmp_path / "curve.csv")
    loaded = load_encoder("builtin", tmp_path / "ft.pt")
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for k, v in outputs(res.encoder, x).items():
        torch.testing.assert_close(outputs(loaded, x)[k], v, rtol=0, atol=0)
    base = load_encoder("builtin", BUILTIN)
    assert loaded.encoder_id != base.encoder_id
    assert any(not torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), base.state_dict().values(),
                                                      strict=True))
    rec = json.loads(lineage_path(tmp_path / "ft.pt").read_text())
    assert rec["encoder"]["encoder_id"] == loaded.encoder_id and rec["steps_done"] == 3
    assert rec["base_encoder"]["encoder_id"] == base.encoder_id
    ds = rec["datasets"][0]
    assert ds["annotator"] == "neuface" and ds["n_sequences"] == 3 and len(ds["sha256"]) == 64
    assert rec["settings"]["lr"] == 1e-4 and rec["settings"]["use_3d"] is True
    training = read_builtin_config(tmp_path / "ft.pt")["training"]
    assert training["finetune"]["datasets"] == rec["datasets"] and training["pretrain"]["settings"]["steps"] == 3000
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0].split(",") == list(CURVE_COLUMNS) and len(lines) == 4


def test_deca_and_emoca_outputs_load_strictly_and_round_trip(setup, tmp_path):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    write_emoca_checkpoint(tmp_path / "emoca.ckpt", seed=0)
    for kind, weights in (("deca", setup["kit"]["deca"]), ("emoca", tmp_path / "emoca.ckpt")):
        st = RegressorSettings(steps=1, **{**FAST, "batch_size": 2, "lr": None})
        res = run(setup, tmp_path / f"{kind}.tar", st, encoder_kind=kind, encoder_weights=weights)
        loaded = load_encoder(kind, tmp_path / f"{kind}.tar")
        for k, v in outputs(res.encoder, x).items():
            torch.testing.assert_close(outputs(loaded, x)[k], v, rtol=0, atol=0)
        assert loaded.encoder_id != f"{kind}:{file_sha256(weights)[:12]}"  # the base's id
        assert res.lineage["settings"]["lr"] == 1e-5  # the paper's DECA rate
    data = torch.load(tmp_path / "deca.tar", weights_only=True)
    assert "E_detail" in data and data["neuface_training"]["steps_done"] == 1


def test_loss_decreases_and_no_3d_drops_the_3d_terms(setup, tmp_path):
    st = RegressorSettings(steps=25, **FAST)
    data = RegressorFrames([setup["dataset"]], setup["crops"])
    flame = setup["kit"]["layer"]
    before = validation_losses(load_encoder("builtin", BUILTIN), flame, data, st, torch.device("cpu"))
    res3 = run(setup, tmp_path / "3d.pt", st)
    after = validation_losses(res3.encoder, flame, data, st, torch.device("cpu"))
    assert after["total"] < 0.6 * before["total"] and after["m3d"] < 0.6 * before["m3d"]
    st2 = RegressorSettings(steps=25, use_3d=False, **FAST)
    res2 = run(setup, tmp_path / "2d.pt", st2)
    for row in res2.history:  # zero 3D weight: the total is the 2D term alone (3D values are only logged)
        assert row["total"] == pytest.approx(row["l2d"] * st2.lambda_l2d, rel=1e-6) and row["m3d"] > 0
    assert res2.history[0]["total"] < res3.history[0]["total"]
    assert any(not torch.equal(a, b) for a, b in zip(res2.encoder.state_dict().values(),
                                                      res3.encoder.state_dict().values(), strict=True))
    assert json.loads(lineage_path(tmp_path / "2d.pt").read_text())["settings"]["use_3d"] is False


def test_identity_3d_predicted_leaves_beta_to_the_2d_term(setup):
    from neuface.encoders.base import EncoderOutput
    from neuface.train.regressor import regressor_losses

    flame = setup["kit"]["layer"]
    g = torch.Generator().manual_seed(3)
    b = 4

    def rand(*size, scale=0.1):
        return (torch.randn(*size, generator=g, dtype=torch.float64) * scale).requires_grad_(True)

    pred = EncoderOutput(shape=rand(b, 100), expression=rand(b, 50), global_pose=rand(b, 3), jaw_pose=rand(b, 3),
                         cam=torch.tensor([[8.0, 0.0, 0.0]] * b, dtype=torch.float64, requires_grad=True))
    batch = {"shape": torch.randn(b, 100, generator=g, dtype=torch.float64) * 0.1,
             "expression": torch.randn(b, 50, generator=g, dtype=torch.float64) * 0.1,
             "global_pose": torch.randn(b, 3, generator=g, dtype=torch.float64) * 0.1,
             "pose": torch.zeros(b, 12, dtype=torch.float64), "landmarks": torch.zeros(b, 68, 2, dtype=torch.float64),
             "landmarks_valid": torch.zeros(b, 68, dtype=torch.bool), "valid": torch.ones(b, dtype=torch.bool)}
    grads = {}
    for mode in ("label", "predicted"):
        st = RegressorSettings(identity_3d=mode, lambda_l2d=0.0)  # the 3D terms alone
        parts = regressor_losses(pred, batch, flame, st)
        grads[mode] = torch.autograd.grad(parts["total"], [pred.shape, pred.expression, pred.global_pose])
        assert parts["m3d"] > 0
    assert grads["label"][0].abs().max() > 0
    assert torch.equal(grads["predicted"][0], torch.zeros_like(pred.shape))  # no identity supervision in 3D
    assert grads["predicted"][1].abs().max() > 0 and grads["predicted"][2].abs().max() > 0
    # with the label's β predicted, both modes are the same loss
    same = EncoderOutput(**{**vars(pred), "shape": batch["shape"].clone()})
    a = regressor_losses(same, batch, flame, RegressorSettings(identity_3d="label"))
    c = regressor_losses(same, batch, flame, RegressorSettings(identity_3d="predicted"))
    assert float(a["total"].detach()) == pytest.approx(float(c["total"].detach()), rel=1e-12)
    with pytest.raises(NeufaceError, match="identity_3d"):
        RegressorSettings(identity_3d="none").check()


def test_pose_3d_canonical_leaves_head_rotation_to_the_2d_term(setup):
    from neuface.encoders.base import EncoderOutput
    from neuface.train.regressor import regressor_losses

    flame = setup["kit"]["layer"]
    g = torch.Generator().manual_seed(5)
    b = 3

    def rand(*size, scale=0.1):
        return torch.randn(*size, generator=g, dtype=torch.float64) * scale

    pred = EncoderOutput(shape=rand(b, 100).requires_grad_(True), expression=rand(b, 50).requires_grad_(True),
                         global_pose=rand(b, 3, scale=0.3).requires_grad_(True),
                         jaw_pose=rand(b, 3).requires_grad_(True),
                         cam=torch.tensor([[8.0, 0.0, 0.0]] * b, dtype=torch.float64))
    batch = {"shape": rand(b, 100), "expression": rand(b, 50), "global_pose": rand(b, 3, scale=0.3),
             "pose": torch.cat([torch.zeros(b, 3), rand(b, 3), torch.zeros(b, 6)], 1).double(),
             "landmarks": torch.zeros(b, 68, 2, dtype=torch.float64),
             "landmarks_valid": torch.zeros(b, 68, dtype=torch.bool), "valid": torch.ones(b, dtype=torch.bool)}
    canon = RegressorSettings(pose_3d="canonical", lambda_l2d=0.0)  # the 3D terms alone
    parts = regressor_losses(pred, batch, flame, canon)
    grads = torch.autograd.grad(parts["total"], [pred.shape, pred.expression, pred.global_pose, pred.jaw_pose])
    assert torch.equal(grads[2], torch.zeros_like(pred.global_pose))  # no head-pose supervision in 3D
    assert all(gr.abs().max() > 0 for gr in (grads[0], grads[1], grads[3]))
    # the naive reference: both meshes built without global rotation
    ref = flame(shape=pred.shape.detach(), expression=pred.expression.detach(),
                global_pose=torch.zeros(b, 3, dtype=torch.float64), pose=pred.pose12().detach())
    tgt = flame(shape=batch["shape"], expression=batch["expression"], global_pose=torch.zeros(b, 3,
                dtype=torch.float64), pose=batch["pose"])
    want = naive_msd(ref.vertices * 1000, tgt.vertices * 1000, [1] * b)
    assert float(parts["m3d"]) == pytest.approx(want, rel=1e-6)
    # independent of either side's global rotation; the posed loss is not
    turned = {**batch, "global_pose": batch["global_pose"] + 0.2}
    assert float(regressor_losses(pred, turned, flame, canon)["m3d"]) == pytest.approx(float(parts["m3d"]), rel=1e-12)
    posed = RegressorSettings(lambda_l2d=0.0)
    assert float(regressor_losses(pred, turned, flame, posed)["m3d"]) != pytest.approx(
        float(regressor_losses(pred, batch, flame, posed)["m3d"]), rel=1e-3)
    # combined with identity_3d=predicted: neither β nor head rotation get a 3D gradient
    both = RegressorSettings(pose_3d="canonical", identity_3d="predicted", lambda_l2d=0.0)
    gb = torch.autograd.grad(regressor_losses(pred, batch, flame, both)["total"], [pred.shape, pred.global_pose])
    assert torch.equal(gb[0], torch.zeros_like(pred.shape)) and torch.equal(gb[1], torch.zeros_like(pred.global_pose))
    with pytest.raises(NeufaceError, match="pose_3d"):
        RegressorSettings(pose_3d="upright").check()


def test_preempted_and_resumed_equals_uninterrupted(setup, tmp_path):
    from test_fit_resume import StopAfter

    st = RegressorSettings(steps=6, checkpoint_every=2, **FAST)
    ref = run(setup, tmp_path / "ref.pt", st, curve=tmp_path / "ref.csv")
    ckpt = tmp_path / "ck.pt"
    with pytest.raises(Preempted):
        run(setup, tmp_path / "out.pt", st, checkpoint=ckpt, curve=tmp_path / "out.csv", stop=StopAfter(2))
    assert ckpt.exists() and not (tmp_path / "out.pt").exists()
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 1 + 3  # curve written with the checkpoint
    res = run(setup, tmp_path / "out.pt", st, checkpoint=ckpt, curve=tmp_path / "out.csv")
    for (k, a), b in zip(ref.encoder.state_dict().items(), res.encoder.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)
    assert res.history == ref.history and not ckpt.exists()
    assert (tmp_path / "out.csv").read_text() == (tmp_path / "ref.csv").read_text()


def test_a_changed_dataset_discards_the_checkpoint(setup, tmp_path, caplog):
    from test_fit_resume import StopAfter

    root = tmp_path / "ds"
    dataset = pack_sequences(root, setup["seqs"][:2], setup["kit"]["flame"])
    st = RegressorSettings(steps=4, checkpoint_every=1, **FAST)
    ckpt = tmp_path / "ck.pt"
    with pytest.raises(Preempted):
        run(setup, tmp_path / "a.pt", st, dataset=dataset, checkpoint=ckpt, stop=StopAfter(1))
    arrays = {s.name: annotation_arrays(s, param_noise=0.05, seed=1) for s in setup["seqs"][:2]}
    pack_sequences(root, setup["seqs"][:2], setup["kit"]["flame"], arrays=arrays, out=dataset)  # same path
    with caplog.at_level(logging.WARNING):
        res = run(setup, tmp_path / "a.pt", st, dataset=dataset, checkpoint=ckpt)
    assert "discarding checkpoint" in caplog.text and "dataset[0]" in caplog.text
    fresh = run(setup, tmp_path / "b.pt", st, dataset=dataset)
    assert res.history == fresh.history


# ------------------------------------------------------------------------------------------------ eval + CLI
def test_cli_train_then_eval_regressor(setup, tmp_path, run_cli):
    kit = setup["kit"]
    out = tmp_path / "ft.pt"
    rc = run_cli("train", "regressor", "--dataset", setup["dataset"], "--crops-dir", setup["crops"],
                 "--flame", kit["flame"], "--embedding", kit["embedding"], "--encoder", "builtin",
                 "--encoder-weights", BUILTIN, "--out", out, "--steps", 2, "--batch-size", 4, "--device", "cpu",
                 "--val-dataset", setup["dataset"], "--val-every", 1, "--curve", tmp_path / "c.csv",
                 "--checkpoint", tmp_path / "ck.pt", "--no-progress")
    assert rc == 0 and out.is_file() and not (tmp_path / "ck.pt").exists()
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert all(r.split(",")[6] != "" for r in rows[1:])  # validation every step
    h0, s1 = setup["held_out"], setup["seqs"][1]
    sheet = write_sheet(tmp_path / "sheet.tsv", [h0, s1], with_gt={"s1": False})
    common = ("--sheet", sheet, "--crops-dir", setup["crops"], "--landmarks-dir", setup["root"] / "landmarks",
              "--flame", kit["flame"], "--embedding", kit["embedding"], "--encoder", "builtin", "--split", "test")
    assert run_cli("eval-regressor", *common, "--encoder-weights", out, "--label", "ft", "--out",
                   tmp_path / "e.json", "--fits-dir", tmp_path / "fits") == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["format"] == "neuface.eval.regressor" and ev["format_version"] == 1 and ev["label"] == "ft"
    assert ev["encoder"]["lineage"]["encoder"]["encoder_id"] == ev["encoder"]["encoder_id"]
    by = {r["sequence"]: r for r in ev["sequences"]}
    assert by["h0"]["has_gt"] and by["h0"]["nme_gt"] > 0 and by["h0"]["n_frames"] == 4
    assert not by["s1"]["has_gt"] and by["s1"]["mpve_aligned_mm"] is None and by["s1"]["nme"] > 0
    s = ev["summary"]
    assert (s["n_sequences"], s["n_frames"], s["n_gt_sequences"]) == (2, 8, 1) and s["nme_gt"]["std"] == 0
    assert s["mpve_aligned_mm"] == by["h0"]["mpve_aligned_mm"]
    for part in ("mpve_identity_mm", "mpve_expression_mm"):  # the two parts of the error, pooled like the total
        assert s[part] == by["h0"][part] and 0 < s[part]["mean"] and by["s1"][part] is None
    from neuface.metrics import sequence_metrics  # the per-frame MPVE averages to the sequence metric

    m = sequence_metrics(tmp_path / "fits" / "h0.h5", kit["layer"], gt_path=h0.gt)
    assert s["mpve_aligned_mm"]["mean"] == pytest.approx(m["metrics"]["mpve_aligned"], rel=1e-6)
    assert run_cli("eval-regressor", *common, "--encoder-weights", BUILTIN, "--label", "o", "--out",
                   tmp_path / "o.json", "--split", "train") == 2  # no sequence in that split: one ERROR line
