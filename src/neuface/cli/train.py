"""``neuface train``: train models on packed NeuFace datasets (paper §5).

* ``neuface train regressor ...`` fine-tunes a FLAME-regression encoder with 2D and 3D supervision
  (:mod:`neuface.cli.train_regressor`).
* ``neuface train motion-prior ...`` trains a HuMoR-style conditional-VAE facial motion prior
  (:mod:`neuface.cli.train_prior`).
"""

from __future__ import annotations

import argparse
import importlib

#: Modules that add one ``neuface train`` action each (``add_train_parser(actions)``).
TRAIN_MODULES = ("neuface.cli.train_regressor", "neuface.cli.train_prior")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a regressor or a motion prior on packed datasets")
    actions = parser.add_subparsers(dest="train_command", metavar="ACTION", required=True)
    for name in TRAIN_MODULES:
        importlib.import_module(name).add_train_parser(actions)
