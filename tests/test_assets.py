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
