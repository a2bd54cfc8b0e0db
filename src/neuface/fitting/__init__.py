"""Annotators: NeuFace optimisation (Eq. 1), encoder regression and FLAME fitting (Eq. 5).

* :mod:`neuface.fitting.config` — :class:`AnnotatorSettings`, :data:`DEFAULT_ANNOTATORS`, :func:`config_hash`.
* :mod:`neuface.fitting.data` — one sequence (crops + landmarks) as a :class:`SequenceBatch`.
* :mod:`neuface.fitting.losses` — L2D, temporal / multi-view losses, E-step targets, naive variants.
* :mod:`neuface.fitting.neuface` / :mod:`~neuface.fitting.regress` / :mod:`~neuface.fitting.flamefit` — methods.
* :mod:`neuface.fitting.checkpoint` — checkpoints, resume, SIGTERM handling.
* :mod:`neuface.fitting.output` — the ``neuface.fit`` file; :mod:`neuface.fitting.api` — :func:`run_fit`.
"""

from neuface.fitting.config import DEFAULT_ANNOTATORS, AnnotatorSettings, config_hash, resolve_annotator

__all__ = ["DEFAULT_ANNOTATORS", "AnnotatorSettings", "config_hash", "resolve_annotator"]
