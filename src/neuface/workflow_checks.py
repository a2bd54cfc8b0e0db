"""Checks of the workflow config made when the Snakefile is parsed (``rules/common.smk``), before any job runs.

The config schema (``config/schema.yaml``) cannot know the annotators' settings: they are the keys of
:class:`~neuface.fitting.config.AnnotatorSettings`, checked when :func:`~neuface.fitting.config.resolve_annotator`
builds them. Left to the ``fit`` jobs, a typo (``n_pass: 3``), a bad value (``lr: "fast"``) or an unknown
annotator would fail every fit after frames, landmarks and crops ran; :func:`validate_annotators` builds every
annotator exactly as the ``fit`` rule and ``neuface fit`` do, so ``snakemake -n`` fails with a message naming
the annotator and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuface.errors import NeufaceError

__all__ = ["annotator_settings", "fit_overrides", "resolved_settings_hash", "validate_annotators"]


def annotator_settings(config: Mapping[str, Any], annotator: str) -> dict[str, Any]:
    """The ``--settings`` of ``neuface fit`` for ``annotator``: ``fitting.common``, then ``fitting.settings[name]``."""
    fitting = config["fitting"]
    return {**(fitting.get("common") or {}), **((fitting.get("settings") or {}).get(annotator) or {})}


def fit_overrides(config: Mapping[str, Any], annotator: str) -> dict[str, Any]:
    """What ``neuface fit`` passes to ``resolve_annotator``: :func:`annotator_settings` and the rule's
    ``--encoder``, ``--encoder-weights`` and ``--device`` (which override the settings; the device is
    ``cluster_device`` when set, as in rules/common.smk)."""
    overrides = annotator_settings(config, annotator)
    device = config.get("cluster_device") or config["fitting"]["device"]
    overrides.update(encoder=config["encoder"]["kind"], encoder_weights=config["encoder"]["weights"], device=device)
    return overrides


def validate_annotators(config: Mapping[str, Any]) -> None:
    """Build every annotator of ``fitting.annotators``; raise one :class:`NeufaceError` naming each bad one.

    Annotators defined in ``fitting.settings`` but not built are checked too (such a name is often a typo of a
    built one, whose settings would then be silently ignored).
    """
    from neuface.fitting.config import resolve_annotator

    fitting = config["fitting"]
    problems = []
    for name in dict.fromkeys([*fitting["annotators"], *(fitting.get("settings") or {})]):
        try:
            resolve_annotator(name, fit_overrides(config, name))
        except NeufaceError as exc:
            where = "fitting.annotators" if name in fitting["annotators"] else "fitting.settings (not built)"
            problems.append(f"annotator {name!r} ({where}): {exc}")
    if problems:
        raise NeufaceError("invalid annotator settings in the workflow config (fitting.common / fitting.settings):\n  "
                           + "\n  ".join(problems))


def resolved_settings_hash(config: Mapping[str, Any], annotator: str) -> str:
    """The config hash of ``annotator`` as ``neuface fit`` will resolve it (its settings *with* the package's
    defaults). A ``params`` entry of the ``fit`` rule: when a neuface upgrade changes a default the fit depends
    on, the hash changes and Snakemake's params trigger re-runs the fits it affects (the ``--settings`` JSON
    carries only the config's overrides and would not change)."""
    from neuface.fitting.config import config_hash, resolve_annotator

    return config_hash(resolve_annotator(annotator, fit_overrides(config, annotator)))[:16]


def annotator_method(config: Mapping[str, Any], annotator: str) -> str:
    """The method (neuface, regress, flamefit, groundtruth) ``annotator`` resolves to."""
    from neuface.fitting.config import resolve_annotator

    return resolve_annotator(annotator, fit_overrides(config, annotator)).method
