"""Encoders: DECA/EMOCA key layout and strict loaders, builtin encoder, pre-training, dispatcher."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from neuface.encoders import (
    DECA_LAYOUT,
    BuiltinEncoder,
    DecaEncoder,
    decode_deca_params,
    freeze_batchnorm,
    load_builtin,
    load_deca,
    load_emoca,
    load_encoder,
    save_builtin,
    write_deca_checkpoint,
    write_emoca_checkpoint,
)
from neuface.encoders.checkpoint import load_strict, safe_torch_load
from neuface.encoders.resnet import ResnetRegressor
from neuface.errors import AssetMissingError, ModelFormatError, NeufaceError, ShapeError, UnsafePickleError


@pytest.fixture(scope="module")
def deca_file(tmp_path_factory):
    return write_deca_checkpoint(tmp_path_factory.mktemp("deca") / "deca_model.tar", seed=3)


@pytest.fixture(scope="module")
def deca_state(deca_file):
    return torch.load(deca_file, weights_only=True)["E_flame"]


@pytest.fixture(scope="module")
def net():
    """One DECA-shaped network reused by the strict-loading tests (ResNet-50 construction is slow)."""
    return ResnetRegressor(236)


# ---------------------------------------------------------------- DECA key layout


def test_resnet50_keys_match_deca_layout(net):
    sd = net.state_dict()
    # DECA's ResNet drops the classifier fc; 53 BatchNorms x 5 tensors + 53 convs + 2 linears x 2 = 322.
    assert len(sd) == 322
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 53
    assert sum(k.endswith("conv1.weight") or ".conv" in k for k in sd) == 53 - 4  # 49 convs named conv*
    assert sum(k.endswith("downsample.0.weight") for k in sd) == 4
    assert not any(k.startswith("encoder.fc") for k in sd)
    expected_shapes = {
        "encoder.conv1.weight": (64, 3, 7, 7),
        "encoder.bn1.running_var": (64,),
        "encoder.layer1.0.conv1.weight": (64, 64, 1, 1),
        "encoder.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "encoder.layer2.3.conv2.weight": (128, 128, 3, 3),
        "encoder.layer3.5.bn3.weight": (1024,),
        "encoder.layer3.0.downsample.1.running_mean": (1024,),
        "encoder.layer4.2.bn3.num_batches_tracked": (),
        "layers.0.weight": (1024, 2048),
        "layers.0.bias": (1024,),
        "layers.2.weight": (236, 1024),
        "layers.2.bias": (236,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "encoder.layer3.6.conv1.weight" not in sd and "encoder.layer4.3.conv1.weight" not in sd


def test_decode_layout_offsets():
    params = torch.arange(236, dtype=torch.float32)[None].repeat(2, 1)
    out = decode_deca_params(params)
    assert out.shape[0, 0] == 0 and out.shape.shape == (2, 100)
    assert out.expression[0, 0] == DECA_LAYOUT["expression"][0] == 150 and out.expression.shape == (2, 50)
    assert out.global_pose[0].tolist() == [200, 201, 202]
    assert out.jaw_pose[0].tolist() == [203, 204, 205]
    assert out.cam[0].tolist() == [206, 207, 208]
    assert out.pose12()[0, 3:6].tolist() == [203, 204, 205] and out.pose12()[0, :3].abs().sum() == 0
    with pytest.raises(ShapeError):
        decode_deca_params(torch.zeros(2, 235))


# ---------------------------------------------------------------- DECA loader


def test_deca_round_trip_and_forward(deca_file, deca_state):
    model = load_deca(deca_file)
    assert not model.training
    assert model.encoder_id.startswith("deca:") and len(model.encoder_id) == 5 + 12
    loaded = model.E_flame.state_dict()
    assert loaded.keys() == deca_state.keys()
    assert all(torch.equal(loaded[k], deca_state[k]) for k in loaded)
    ref = ResnetRegressor(236)
    from neuface.encoders.deca import _deca_code_init

    _deca_code_init(ref, 3, 8.0)  # same seed -> same weights: the writer is deterministic
    assert torch.equal(ref.state_dict()["encoder.layer2.1.conv2.weight"], loaded["encoder.layer2.1.conv2.weight"])
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(images)
    assert out.shape.shape == (2, 100) and out.expression.shape == (2, 50) and out.shape.dtype == torch.float32
    assert out.global_pose.shape == out.jaw_pose.shape == out.cam.shape == (2, 3)
    assert 7.0 < float(out.cam[:, 0].mean()) < 9.0  # stand-in weights predict a typical camera scale
    with pytest.raises(ShapeError):
        model(torch.rand(1, 3, 112, 112))


def _broken(state, how):
    state = dict(state)
    if how == "missing":
        del state["encoder.layer2.1.bn2.running_mean"]
        return state, ["missing", "encoder.layer2.1.bn2.running_mean"]
    if how == "unexpected":
        state["encoder.fc.weight"] = torch.zeros(1000, 2048)
        return state, ["unexpected", "encoder.fc.weight"]
    if how == "wrong_key":
        state["encoder.layer1.0.convX.weight"] = state.pop("encoder.layer1.0.conv2.weight")
        return state, ["missing", "encoder.layer1.0.conv2.weight", "unexpected", "encoder.layer1.0.convX.weight"]
    if how == "misshaped":
        state["layers.2.weight"] = torch.zeros(200, 1024)
        return state, ["mis-shaped", "layers.2.weight", "(200, 1024)"]
    if how == "non_tensor":
        state["layers.2.bias"] = [0.0] * 236
        return state, ["non-tensor", "layers.2.bias"]
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing", "unexpected", "wrong_key", "misshaped", "non_tensor"])
def test_strict_state_dict_names_the_key(net, deca_state, how):
    state, words = _broken(deca_state, how)
    with pytest.raises(ModelFormatError) as err:
        load_strict(net, state, "ckpt")
    for word in words:
        assert word in str(err.value)


def test_num_batches_tracked_may_be_absent(net, deca_state):
    state = {k: v for k, v in deca_state.items() if not k.endswith("num_batches_tracked")}
    assert len(state) == 269
    load_strict(net, state, "old")
    assert torch.equal(net.state_dict()["layers.2.bias"], deca_state["layers.2.bias"])


def test_load_deca_file_errors(tmp_path, deca_state):
    with pytest.raises(AssetMissingError, match="deca.is.tue.mpg.de"):
        load_deca(tmp_path / "nope.tar")
    state, _ = _broken(deca_state, "misshaped")
    torch.save({"E_flame": state, "E_detail": {}, "D_detail": {}}, tmp_path / "bad.tar")
    with pytest.raises(ModelFormatError, match=r"E_flame.*layers\.2\.weight"):
        load_deca(tmp_path / "bad.tar")
    torch.save({"E_detail": {}}, tmp_path / "nokey.tar")
    with pytest.raises(ModelFormatError, match="no 'E_flame'"):
        load_deca(tmp_path / "nokey.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFormatError):
        load_deca(tmp_path / "junk.tar")


class _Payload:
    """Unpickling this would create a file (it must never be executed)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Plain:
    """A harmless but arbitrary class: still refused."""


def test_arbitrary_objects_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"E_flame": {}, "extra": _Payload(str(marker))}, tmp_path / "evil.tar")
    assert not marker.exists()
    with pytest.raises(UnsafePickleError):
        load_deca(tmp_path / "evil.tar")
    assert not marker.exists()
    torch.save({"E_flame": {"x": torch.zeros(1)}, "obj": _Plain()}, tmp_path / "obj.tar")
    with pytest.raises(UnsafePickleError):
        load_deca(tmp_path / "obj.tar")


def test_lightning_callback_keys_are_inert(tmp_path, monkeypatch):
    """Old Lightning checkpoints key 'callbacks' by class: accepted as an inert stub, nothing else is."""
    mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    cls = type("ModelCheckpoint", (), {"__module__": mod.__name__})
    mod.ModelCheckpoint = cls
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", mod.__name__):
        monkeypatch.setitem(sys.modules, name, mod if name == mod.__name__ else types.ModuleType(name))
    torch.save({"state_dict": {"a": torch.ones(2)}, "callbacks": {cls: {"best": 1.0}}}, tmp_path / "pl.ckpt")
    with pytest.raises(UnsafePickleError):
        safe_torch_load(tmp_path / "pl.ckpt")
    data = safe_torch_load(tmp_path / "pl.ckpt", allow_lightning_callbacks=True)
    assert torch.equal(data["state_dict"]["a"], torch.ones(2))


# ---------------------------------------------------------------- EMOCA


def test_emoca_round_trip_and_strictness(tmp_path):
    path = write_emoca_checkpoint(tmp_path / "emoca.ckpt", seed=1)
    data = torch.load(path, weights_only=True)
    keys = data["state_dict"].keys()
    assert "deca.E_flame.encoder.conv1.weight" in keys and "deca.E_expression.layers.2.weight" in keys
    assert len(keys) == 2 * 322 and data["state_dict"]["deca.E_expression.layers.2.weight"].shape == (50, 1024)
    model = load_emoca(path)
    assert model.encoder_id.startswith("emoca:")
    seen = {}
    for name in ("E_flame", "E_expression"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 224, 224))
    deca = decode_deca_params(seen["E_flame"])
    assert torch.equal(out.expression, seen["E_expression"]) and torch.equal(out.shape, deca.shape)
    assert torch.equal(out.jaw_pose, deca.jaw_pose) and not torch.equal(out.expression, deca.expression)
    state = dict(data["state_dict"])
    del state["deca.E_expression.encoder.layer4.1.bn1.weight"]
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(ModelFormatError, match=r"E_expression.*encoder\.layer4\.1\.bn1\.weight"):
        load_emoca(tmp_path / "bad.ckpt")
    torch.save({"state_dict": {"deca.E_flame.layers.2.bias": torch.zeros(236)}}, tmp_path / "deca.ckpt")
    with pytest.raises(ModelFormatError, match="E_expression"):
        load_emoca(tmp_path / "deca.ckpt")


# ---------------------------------------------------------------- builtin


def test_builtin_untrained_prior_roundtrip_and_options(tmp_path):
    model = BuiltinEncoder({"cam_prior": [9.0, 0.0, 0.05]}).reset_parameters(0).eval()
    images = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(images)
    assert out.shape.shape == (3, 100) and out.expression.shape == (3, 50) and out.cam.shape == (3, 3)
    assert out.global_pose.abs().max() < 0.05 and out.jaw_pose.abs().max() < 0.05  # frontal, mouth closed
    assert torch.allclose(out.cam, torch.tensor([9.0, 0.0, 0.05]).expand(3, 3), atol=0.05)
    path = save_builtin(model, tmp_path / "b.pt", {"steps": 0})
    loaded = load_builtin(path)
    assert loaded.encoder_id.startswith("builtin:") and loaded.arch == model.arch
    with torch.no_grad():
        assert torch.equal(loaded(images).cam, out.cam)
        cl = loaded.to_channels_last()(images)
    assert torch.allclose(cl.cam, out.cam, atol=1e-4) and torch.allclose(cl.shape, out.shape, atol=1e-4)
    data = torch.load(path, weights_only=True)
    data["state_dict"]["head.2.bias"] = torch.zeros(3)
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ModelFormatError, match="head.2.bias"):
        load_builtin(tmp_path / "bad.pt")
    with pytest.raises(ModelFormatError, match="JSON"):
        save_builtin(model, tmp_path / "c.pt", {"version": torch.__version__, "obj": object()})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = model(images)
    assert bf.cam.dtype == torch.float32 and torch.allclose(bf.cam, out.cam, rtol=0.05)


def test_cli_encoder_info(tmp_path, capsys):
    import argparse
    import json

    from neuface.cli import encoder as cli_encoder

    save_builtin(BuiltinEncoder().reset_parameters(0), tmp_path / "b.pt", {"steps": 3})
    parser = argparse.ArgumentParser()
    cli_encoder.register(parser.add_subparsers())
    args = parser.parse_args(["encoder", "info", "--kind", "builtin", str(tmp_path / "b.pt")])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["encoder_id"].startswith("builtin:") and info["config"]["training"] == {"steps": 3}


def test_freeze_batchnorm_survives_train():
    model = BuiltinEncoder().freeze_batchnorm(freeze_affine=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns) and model.head.training
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = bns[0].running_mean.clone()
    model(torch.rand(2, 3, 224, 224) + 1.0)
    assert torch.equal(bns[0].running_mean, before)
    plain = freeze_batchnorm(BuiltinEncoder().train())
    assert all(not m.training for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_load_encoder_dispatch(tmp_path, deca_file):
    assert isinstance(load_encoder("deca", deca_file, "cpu"), DecaEncoder)
    with pytest.raises(NeufaceError, match="unknown encoder kind"):
        load_encoder("resnet", deca_file, "cpu")
    with pytest.raises(AssetMissingError, match="emoca.is.tue.mpg.de"):
        load_encoder("emoca", None, "cpu")
    with pytest.raises(AssetMissingError, match="pretrain"):
        load_encoder("builtin", tmp_path / "missing.pt", "cpu")
    with pytest.raises(ModelFormatError, match="not a neuface encoder"):
        load_encoder("builtin", deca_file, "cpu")


def test_pretrain_tiny_loss_decreases():
    from neuface.encoders.pretrain import PretrainSettings, augment, pretrain_builtin, sample_batch
    from neuface.flame.layer import FlameLayer
    from neuface.geometry.camera import weak_perspective_project
    from neuface.synthetic.kit import generate

    flame = FlameLayer(*generate(0))
    settings = PretrainSettings(steps=30, batch_size=4, pool_size=4, lr=3e-3, seed=0)
    # the augmentation's camera update is exact: re-projecting the landmarks with the new camera agrees
    gen = torch.Generator().manual_seed(0)
    batch = sample_batch(flame, torch.full((flame.num_vertices, 3), 0.7), settings, gen)
    aug = augment(batch, settings, gen)
    with torch.no_grad():
        fl = flame(aug.target.shape, aug.target.expression, aug.target.global_pose, aug.target.pose12())
    proj = weak_perspective_project(fl.landmarks2d, aug.target.cam)[..., :2]
    assert torch.allclose(proj, aug.landmarks, atol=1e-5)
    assert not torch.allclose(aug.landmarks, batch.landmarks, atol=1e-3)
    model, history = pretrain_builtin(flame, settings)
    assert len(history["total"]) == 30 and not model.training
    first, last = sum(history["total"][:5]) / 5, sum(history["total"][-5:]) / 5
    assert last < 0.8 * first, history["total"]


def test_pretrain_prior_term_against_a_loop_and_it_keeps_a_2d_only_base_inside_the_prior():
    """The β/ψ prior is Σ_k β_k² + Σ_k ψ_k², averaged over images, weighted by ``w_prior`` in the total; with
    ``w_params = 0`` (2D only) it is what holds the identities a landmark loss cannot determine."""
    from dataclasses import replace

    from neuface.encoders.base import EncoderOutput
    from neuface.encoders.pretrain import PretrainSettings, pretrain_builtin, pretrain_losses, sample_batch
    from neuface.flame.layer import FlameLayer
    from neuface.synthetic.kit import generate

    flame = FlameLayer(*generate(0))
    settings = PretrainSettings(steps=25, batch_size=4, pool_size=4, lr=3e-3, seed=0, w_params=0.0)
    batch = sample_batch(flame, torch.full((flame.num_vertices, 3), 0.7), settings, torch.Generator().manual_seed(1))
    t = batch.target
    pred = EncoderOutput(shape=t.shape + 0.3, expression=t.expression - 0.2, global_pose=t.global_pose,
                         jaw_pose=t.jaw_pose, cam=t.cam)
    naive = 0.0
    for i in range(4):
        naive += sum(float(v) ** 2 for v in pred.shape[i]) + sum(float(v) ** 2 for v in pred.expression[i])
    off = pretrain_losses(pred, batch, flame, settings)
    on = pretrain_losses(pred, batch, flame, replace(settings, w_prior=0.5))
    assert off["prior"].item() == pytest.approx(naive / 4, rel=1e-5)
    assert (on["total"] - off["total"]).item() == pytest.approx(0.5 * naive / 4, rel=1e-4)

    def beta_norm(w_prior: float) -> float:
        model, history = pretrain_builtin(flame, replace(settings, w_prior=w_prior))
        with torch.no_grad():
            return float(model(batch.images).shape.norm(dim=1).mean())

    assert beta_norm(1.0) < 0.5 * beta_norm(0.0)


@pytest.mark.cuda
def test_bf16_autocast_cuda(deca_file):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = load_deca(deca_file, "cuda").to_channels_last().freeze_batchnorm()
    images = torch.rand(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = model(images)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(images)
        out.cam.sum().backward()
    assert out.cam.dtype == torch.float32 and torch.isfinite(out.shape).all()
    assert torch.allclose(out.cam, ref.cam, rtol=0.05, atol=0.05)
    assert model.E_flame.layers[2].weight.grad is not None
