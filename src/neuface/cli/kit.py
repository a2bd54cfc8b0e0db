"""``neuface kit``: build or describe the synthetic asset kit (a head model, NOT FLAME; tests/demo only).

* ``neuface kit build --out DIR [--seed N] [--force]`` writes ``DIR/flame/generic_model.pkl`` (FLAME 2020
  layout), ``DIR/flame/landmark_embedding.npy`` (DECA's keys) and ``DIR/kit.json``; an up-to-date kit (same
  seed, package and generator version, files matching their sha256) is left alone unless ``--force``. It also
  writes ``DIR/deca/deca_model.tar`` (DECA's checkpoint format, untrained weights) unless ``--no-deca``.
* ``neuface kit info DIR`` prints the manifest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from neuface.cli.argtypes import non_negative_int

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("kit", help="synthetic head-model kit (NOT FLAME) for tests and the demo")
    kit_sub = parser.add_subparsers(dest="kit_command", metavar="ACTION", required=True)
    build = kit_sub.add_parser(
        "build",
        help="write the synthetic FLAME-format model + DECA-format landmark embedding",
        description="Generate the synthetic kit: a FLAME-format head model that is NOT FLAME, for tests and "
        "the demo only.",
    )
    build.add_argument("--out", required=True, help="kit directory (created if needed)")
    build.add_argument("--seed", type=non_negative_int, default=0, help="generator seed (default 0)")
    build.add_argument("--force", action="store_true", help="rebuild even if the kit there is up to date")
    build.add_argument("--no-deca", dest="with_deca", action="store_false",
                       help="skip deca/deca_model.tar (a ~100 MB DECA-format checkpoint with untrained weights)")
    build.set_defaults(func=_build)
    info = kit_sub.add_parser("info", help="print a kit's manifest (kit.json)")
    info.add_argument("dir", help="kit directory")
    info.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    from neuface.synthetic.kit import build_kit

    manifest = build_kit(args.out, seed=args.seed, force=args.force, with_deca=args.with_deca)
    log.info("kit ready in %s (%s)", args.out, manifest["statement"])
    return 0


def _info(args: argparse.Namespace) -> int:
    from neuface.synthetic.kit import read_manifest

    manifest = read_manifest(args.dir)
    sys.stdout.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return 0
