"""``neuface assets {check,fetch}``: which model assets are in place, and fetching the downloadable ones."""

from __future__ import annotations

import argparse
import logging

import yaml

from neuface.errors import NeufaceError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("assets", help="check model assets / fetch downloadable weights")
    what = parser.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    check = what.add_parser("check", help="report every asset: path, state, where to get it")
    check.add_argument("--config", nargs="+", action="extend", default=[], metavar="YAML",
                       help="workflow config file(s), merged key by key like snakemake --configfile A B (later "
                       "files win); reads assets, kit.dir, encoder.kind/weights and landmarks.backend")
    check.add_argument("--flame", default=None, help="FLAME-format model")
    check.add_argument("--embedding", default=None, help="DECA-format landmark embedding")
    check.add_argument("--encoder", default=None, choices=("deca", "emoca", "builtin"), help="encoder kind")
    check.add_argument("--encoder-weights", default=None, help="encoder weights file")
    check.add_argument("--landmark-backend", default=None, choices=("fan", "dlib", "auto"),
                       help="landmark backend (default: the config's landmarks.backend, else auto)")
    check.add_argument("--kit-dir", default=None,
                       help="the synthetic kit's directory (default: the config's kit.dir): its absent files are "
                       "built by the workflow, not missing")
    check.set_defaults(func=_check)
    fetch = what.add_parser("fetch", help="download FAN weights into the torch hub cache (needs internet)")
    fetch.add_argument("which", choices=("fan",))
    fetch.set_defaults(func=_fetch)


def merge_configs(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into a copy of ``base`` key by key (nested mappings merged, other values replaced), as
    snakemake merges ``--configfile A B``."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = value
    return out


def load_configs(paths: list[str]) -> dict:
    """The config files ``paths`` merged in order (:func:`merge_configs`)."""
    from pathlib import Path

    cfg: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise NeufaceError(f"config file {path} does not exist")
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise NeufaceError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise NeufaceError(f"config file {path} is not a mapping of keys")
        cfg = merge_configs(cfg, data)
    return cfg


def _check(args: argparse.Namespace) -> int:
    from neuface.assets import BAD_STATES, check_assets

    cfg = load_configs(args.config)

    def key(section: str, name: str):
        value = cfg.get(section)
        return value.get(name) if isinstance(value, dict) else None

    flame = args.flame or key("assets", "flame_model")
    embedding = args.embedding or key("assets", "landmark_embedding")
    encoder = args.encoder or key("encoder", "kind")
    weights = args.encoder_weights or key("encoder", "weights")
    backend = args.landmark_backend or key("landmarks", "backend") or "auto"
    kit_dir = args.kit_dir or key("kit", "dir")
    if args.config:
        log.info("config: %s", " + ".join(args.config))
    shots = key("landmarks", "shots")
    shots = shots if isinstance(shots, dict) else {}
    identity = shots.get("enabled", True) and shots.get("identity_threshold", 0.6) is not None
    reports = check_assets(flame, embedding, encoder, weights, backend, kit_dir=kit_dir, face_descriptor=identity)
    for r in reports:
        level = logging.ERROR if r.state in BAD_STATES else logging.INFO
        log.log(level, "%-22s %-8s %s%s", r.name, r.state, r.path, f" ({r.detail})" if r.detail else "")
        if r.state in (*BAD_STATES, "optional"):
            log.log(level, "%-22s get it: %s", "", r.origin)
    bad = [r.name for r in reports if r.state in BAD_STATES]
    if bad:
        raise NeufaceError(f"assets not ready: {', '.join(bad)}")
    made = [r.name for r in reports if r.state == "workflow"]
    log.info("all assets in place" + (f" or made by the workflow ({', '.join(made)})" if made else ""))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from neuface.assets import fetch_fan

    paths = fetch_fan()
    log.info("fetched %d file(s)%s", len(paths), "" if paths else " (all FAN weights already present)")
    return 0
