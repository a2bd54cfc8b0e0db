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
    check.add_argument("--config", default=None, help="workflow config (reads its assets/fitting/landmarks keys)")
    check.add_argument("--flame", default=None, help="FLAME-format model")
    check.add_argument("--embedding", default=None, help="DECA-format landmark embedding")
    check.add_argument("--encoder", default=None, choices=("deca", "emoca", "builtin"), help="encoder kind")
    check.add_argument("--encoder-weights", default=None, help="encoder weights file")
    check.add_argument("--landmark-backend", default="auto", choices=("fan", "dlib", "auto"))
    check.set_defaults(func=_check)
    fetch = what.add_parser("fetch", help="download FAN weights into the torch hub cache (needs internet)")
    fetch.add_argument("which", choices=("fan",))
    fetch.set_defaults(func=_fetch)


def _check(args: argparse.Namespace) -> int:
    from neuface.assets import check_assets

    flame, embedding, encoder, weights, backend = (args.flame, args.embedding, args.encoder,
                                                   args.encoder_weights, args.landmark_backend)
    if args.config:
        with open(args.config) as fh:
            cfg = yaml.safe_load(fh) or {}
        assets, fitting = cfg.get("assets", {}), cfg.get("fitting", {})
        flame = flame or assets.get("flame_model")
        embedding = embedding or assets.get("landmark_embedding")
        encoder = encoder or fitting.get("encoder")
        weights = weights or fitting.get("encoder_weights")
        backend = cfg.get("landmarks", {}).get("backend", backend)
    reports = check_assets(flame, embedding, encoder, weights, backend)
    for r in reports:
        level = logging.INFO if r.state in ("ok", "optional") else logging.ERROR
        log.log(level, "%-22s %-8s %s%s", r.name, r.state, r.path, f" ({r.detail})" if r.detail else "")
        if r.state != "ok":
            log.log(level, "%-22s get it: %s", "", r.origin)
    bad = [r.name for r in reports if r.state in ("missing", "invalid")]
    if bad:
        raise NeufaceError(f"assets not ready: {', '.join(bad)}")
    log.info("all assets in place")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from neuface.assets import fetch_fan

    paths = fetch_fan()
    log.info("fetched %d file(s)%s", len(paths), "" if paths else " (all FAN weights already present)")
    return 0
