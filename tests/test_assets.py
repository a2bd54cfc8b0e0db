"""`neuface assets check`: every asset reported with its state and where to get it."""

from __future__ import annotations

import pytest

from neuface.assets import check_assets


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from neuface.cli import main

    out = tmp_path_factory.mktemp("kit")
    assert main(["kit", "build", "--out", str(out)]) == 0
    return out / "flame"


def test_check_reports_ok_missing_and_invalid(kit, tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    reports = {r.name: r for r in check_assets(str(kit / "generic_model.pkl"), str(bad), "deca",
                                               str(tmp_path / "deca_model.tar"), "dlib")}
    assert reports["flame_model"].ok
    assert reports["landmark_embedding"].state == "invalid" and reports["landmark_embedding"].detail
    assert reports["encoder (deca)"].state == "missing" and "flame.is.tue.mpg.de" in reports["encoder (deca)"].origin
    assert reports["dlib predictor"].state in ("ok", "missing")


def test_cli_exit_codes(kit, run_cli, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ok = run_cli("assets", "check", "--flame", kit / "generic_model.pkl",
                 "--embedding", kit / "landmark_embedding.npy", "--landmark-backend", "dlib")
    missing = run_cli("assets", "check", "--flame", tmp_path / "nope.pkl", "--embedding",
                      kit / "landmark_embedding.npy", "--landmark-backend", "fan")
    err = capsys.readouterr().err
    assert ok == 0 and missing == 2
    assert "nope.pkl" in err and "get it:" in err and "2DFAN4" in err


def test_workflow_made_assets_are_not_missing_and_encoders_load_strictly(kit, tmp_path):
    from neuface.encoders import BuiltinEncoder, save_builtin

    kit_dir = tmp_path / "kit"  # configured but not built yet: the workflow builds it
    reports = {r.name: r for r in check_assets(str(kit_dir / "flame/generic_model.pkl"),
                                               str(kit_dir / "flame/landmark_embedding.npy"), "builtin",
                                               str(tmp_path / "builtin.pt"), "dlib", kit_dir=str(kit_dir))}
    assert reports["flame_model"].state == "workflow" and "kit_build" in reports["flame_model"].detail
    assert reports["landmark_embedding"].state == "workflow"
    encoder = reports["encoder (builtin)"]
    assert encoder.state == "workflow" and "encoder_pretrain" in encoder.detail
    # outside kit.dir an absent file is missing
    elsewhere = check_assets(str(tmp_path / "flame.pkl"), None, kit_dir=str(kit_dir))
    assert elsewhere[0].state == "missing" and elsewhere[1].state == "missing"

    save_builtin(BuiltinEncoder(), tmp_path / "builtin.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "deca_model.tar").write_bytes(b"not a tar either")
    ok = check_assets(None, None, "builtin", str(tmp_path / "builtin.pt"), "dlib")[2]
    broken = check_assets(None, None, "builtin", str(tmp_path / "broken.pt"), "dlib")[2]
    deca_bad = check_assets(None, None, "deca", str(tmp_path / "deca_model.tar"), "dlib")[2]
    deca_kit = check_assets(None, None, "deca", str(kit.parent / "deca/deca_model.tar"), "dlib")[2]
    deca_absent = check_assets(None, None, "deca", str(tmp_path / "nope.tar"), "dlib")[2]
    assert ok.state == "ok" and broken.state == "invalid" and broken.detail
    assert deca_bad.state == "invalid" and deca_kit.state == "ok"
    assert deca_absent.state == "missing" and "flame.is.tue.mpg.de" in deca_absent.origin
    assert check_assets(None, None, "resnet", None, "dlib")[2].state == "invalid"


def test_cli_merges_config_overlays(kit, run_cli, tmp_path, capsys):
    import yaml

    base = tmp_path / "config.yaml"
    base.write_text(yaml.safe_dump({
        "assets": {"flame_model": str(tmp_path / "kit/flame/generic_model.pkl"),
                   "landmark_embedding": str(tmp_path / "kit/flame/landmark_embedding.npy")},
        "kit": {"dir": str(tmp_path / "kit"), "seed": 0},
        "encoder": {"kind": "builtin", "weights": str(tmp_path / "enc/builtin.pt")},
        "landmarks": {"backend": "dlib"}}))
    assert run_cli("assets", "check", "--config", base) == 0
    err = capsys.readouterr().err
    assert "will be built by the workflow" in err and "will be pre-trained by the workflow" in err
    overlay = tmp_path / "mine.yaml"  # real files of one's own: the overlay wins key by key
    overlay.write_text(yaml.safe_dump({"assets": {"flame_model": str(kit / "generic_model.pkl")},
                                       "encoder": {"kind": "deca", "weights": str(tmp_path / "deca_model.tar")}}))
    assert run_cli("assets", "check", "--config", base, overlay) == 2
    err = capsys.readouterr().err
    assert "flame_model            ok" in err and "encoder (deca)         missing" in err
    assert "landmark_embedding     workflow" in err  # kept from the base config
    assert run_cli("assets", "check", "--config", tmp_path / "nope.yaml") == 2
