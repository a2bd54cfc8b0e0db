"""validate_annotators: every annotator of the workflow config is built as `neuface fit` builds it."""

from __future__ import annotations

import copy
import json

import pytest

from neuface.errors import NeufaceError
from neuface.fitting.config import resolve_annotator
from neuface.workflow_checks import annotator_settings, fit_overrides, validate_annotators

CONFIG = {
    "encoder": {"kind": "builtin", "weights": "resources/encoders/builtin.pt"},
    "fitting": {"annotators": ["regress", "flamefit", "neuface", "mine"], "device": "cpu",
                "common": {"n_passes": 10, "lr": 5e-4},
                "settings": {"flamefit": {"flamefit_steps": [20, 40]}, "mine": {"method": "neuface", "lr": 1e-3}}},
}


def _with(**changes):
    cfg = copy.deepcopy(CONFIG)
    for path, value in changes.items():
        *parents, key = path.split("__")
        node = cfg["fitting"]
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    return cfg


def test_a_good_config_passes_and_settings_are_the_rules():
    validate_annotators(CONFIG)
    assert annotator_settings(CONFIG, "mine") == {"n_passes": 10, "lr": 1e-3, "method": "neuface"}
    assert annotator_settings(CONFIG, "regress") == {"n_passes": 10, "lr": 5e-4}
    # what the fit rule passes (--settings JSON, --encoder, --encoder-weights, --device) builds the same settings
    settings = resolve_annotator("flamefit", fit_overrides(CONFIG, "flamefit"))
    assert settings.flamefit_steps == (20, 40) and settings.encoder == "builtin" and settings.device == "cpu"
    assert settings.encoder_weights == "resources/encoders/builtin.pt" and settings.n_passes == 10
    cli = resolve_annotator("flamefit", {**json.loads(json.dumps(annotator_settings(CONFIG, "flamefit"))),
                                         "encoder": "builtin", "encoder_weights": "resources/encoders/builtin.pt",
                                         "device": "cpu"})
    assert cli == settings


@pytest.mark.parametrize("changes, message", [
    ({"settings__neuface__n_pass": 3}, r"annotator 'neuface' \(fitting.annotators\): unknown annotator setting\(s\): "
                                       r"n_pass"),
    ({"common__lr": "fast"}, r"annotator 'regress' .*lr='fast'"),
    ({"annotators": ["regress", "nope"]}, r"annotator 'nope' \(fitting.annotators\): unknown annotator 'nope'"),
    ({"settings__nueface": {"lr": 1e-3}}, r"annotator 'nueface' \(fitting.settings \(not built\)\): unknown"),
    ({"settings__neuface__temporal_window": 4}, r"annotator 'neuface' .*temporal_window must be a positive odd"),
    ({"settings__mine__method": "deca"}, r"annotator 'mine' .*method must be one of"),
])
def test_bad_settings_name_the_annotator_and_the_key(changes, message):
    with pytest.raises(NeufaceError, match=message):
        validate_annotators(_with(**changes))


def test_every_bad_annotator_is_named_at_once():
    with pytest.raises(NeufaceError) as info:
        validate_annotators(_with(common__lr="fast"))
    assert all(f"annotator {name!r}" in str(info.value) for name in ("regress", "flamefit", "neuface"))
    assert "'mine'" not in str(info.value)  # its own lr overrides fitting.common's


def test_resolved_settings_hash_follows_the_package_defaults(monkeypatch):
    """The fit rule's `resolved` param: equal for equal settings, changed by a config override *and* by a changed
    package default that the `--settings` JSON (config overrides only) does not show."""
    from neuface.fitting import config as fit_config
    from neuface.workflow_checks import resolved_settings_hash

    before = resolved_settings_hash(CONFIG, "neuface")
    assert before == resolved_settings_hash(copy.deepcopy(CONFIG), "neuface")
    assert resolved_settings_hash(_with(common__lr=1e-4), "neuface") != before
    json_before = json.dumps(annotator_settings(CONFIG, "neuface"), sort_keys=True)
    monkeypatch.setitem(fit_config.DEFAULT_ANNOTATORS, "neuface", {"method": "neuface", "e_step": "reuse"})
    assert json.dumps(annotator_settings(CONFIG, "neuface"), sort_keys=True) == json_before
    assert resolved_settings_hash(CONFIG, "neuface") != before
