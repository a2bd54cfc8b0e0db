"""Shipped builtin-encoder weights: copied instead of trained only when model hashes and settings match."""

from __future__ import annotations

import json

import pytest

from neuface.cli import main
from neuface.encoders import shipped
from neuface.encoders.checkpoint import file_sha256
from neuface.encoders.pretrain import settings_record
from neuface.pretrain_settings import PretrainSettings

TINY = ["--steps", "2", "--batch-size", "2", "--pool-size", "4"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("kit")
    assert main(["kit", "build", "--out", str(out), "--seed", "0"]) == 0
    return out / "flame" / "generic_model.pkl", out / "flame" / "landmark_embedding.npy"


def pretrain(kit, out, *extra) -> int:
    return main(["--log-file", str(out) + ".log", "encoder", "pretrain", "--flame", str(kit[0]),
                 "--embedding", str(kit[1]), "--out", str(out), *TINY, *extra])


def test_a_recorded_encoder_is_reused_only_for_the_same_model_and_settings(kit, tmp_path, monkeypatch):
    ship = tmp_path / "ship"
    ship.mkdir()
    assert pretrain(kit, ship / "enc.pt", "--record", str(ship / "enc.json"), "--no-shipped") == 0
    record = json.loads((ship / "enc.json").read_text())
    assert record["weights"] == "enc.pt" and record["weights_sha256"] == file_sha256(ship / "enc.pt")
    assert record["command"].startswith("neuface encoder pretrain") and "--steps 2" in record["command"]
    assert record["settings"]["steps"] == 2 and len(record["flame_sha256"]) == 64
    monkeypatch.setattr(shipped, "SHIPPED_DIR", ship)
    monkeypatch.setattr(shipped.find_shipped, "__defaults__", (ship,))
    assert pretrain(kit, tmp_path / "copy.pt") == 0  # same model, same settings: copied, not trained
    assert file_sha256(tmp_path / "copy.pt") == record["weights_sha256"]
    assert "ships weights" in (tmp_path / "copy.pt.log").read_text()
    assert pretrain(kit, tmp_path / "other.pt", "--seed", "1") == 0  # other settings: trained
    assert file_sha256(tmp_path / "other.pt") != record["weights_sha256"]
    assert "ships weights" not in (tmp_path / "other.pt.log").read_text()
    # a damaged shipped file is never used
    (ship / "enc.pt").write_bytes(b"damaged")
    assert shipped.find_shipped(shipped.model_key(*kit), record["settings"], ship) is None


def test_another_model_does_not_match(kit, tmp_path_factory):
    other = tmp_path_factory.mktemp("kit1")
    assert main(["kit", "build", "--out", str(other), "--seed", "1"]) == 0
    key0 = shipped.model_key(*kit)
    key1 = shipped.model_key(other / "flame" / "generic_model.pkl", other / "flame" / "landmark_embedding.npy")
    assert key0["flame_sha256"] != key1["flame_sha256"]  # (the kit's embedding is the same for every seed)
    assert shipped.find_shipped(key1, settings_record(PretrainSettings())) is None


def test_the_package_ships_weights_for_the_default_kit_and_default_settings(kit):
    """Guards `make demo`'s time: changing the pre-training defaults or the kit without re-shipping fails here."""
    found = shipped.find_shipped(shipped.model_key(*kit), settings_record(PretrainSettings()))
    assert found is not None and found.parent == shipped.SHIPPED_DIR
    assert found.stat().st_size < 10 * 2**20


def test_param_weight_zero_trains_a_2d_only_encoder_never_the_shipped_one(kit, tmp_path):
    """`--param-weight 0` (the Table 5 base without 3D supervision) is recorded in the file and, being other
    settings, is trained rather than copied; a negative weight is a user error."""
    import torch

    from neuface.encoders.builtin import load_builtin

    assert pretrain(kit, tmp_path / "e2d.pt", "--param-weight", "0") == 0
    assert "ships weights" not in (tmp_path / "e2d.pt.log").read_text()
    raw = torch.load(tmp_path / "e2d.pt", weights_only=True)
    assert raw["config"]["training"]["settings"]["w_params"] == 0.0
    load_builtin(tmp_path / "e2d.pt")  # strict
    assert pretrain(kit, tmp_path / "bad.pt", "--param-weight", "-1") == 2 and not (tmp_path / "bad.pt").exists()
    assert pretrain(kit, tmp_path / "prior.pt", "--param-weight", "0", "--prior-weight", "0.01") == 0
    raw = torch.load(tmp_path / "prior.pt", weights_only=True)
    assert raw["config"]["training"]["settings"]["w_prior"] == 0.01
    assert pretrain(kit, tmp_path / "bad.pt", "--prior-weight", "nan") == 2 and not (tmp_path / "bad.pt").exists()
