"""Fidelity metrics of face-mesh annotations (NeuFace §3.4, §4.1): MSI_3D, CVD, NME, MPVE.

Pure functions live in :mod:`neuface.metrics.core`; :func:`sequence_metrics` computes all of them for one fit
file. Units: millimetres for 3D quantities, percent for NME (see ``docs/metrics.md``).
"""

from neuface.metrics.core import (
    EYE_CORNERS,
    MM_PER_M,
    MSI_EPS,
    acceleration,
    acceleration_variance,
    cvd,
    cvd_matrix,
    cvd_per_view,
    mpve,
    msi_3d,
    msi_3d_batch,
    msi_from_variance,
    nme,
    nme_per_sample,
)
from neuface.metrics.fitfile import read_fit_arrays, write_fit_file
from neuface.metrics.sequence import METRICS_FORMAT, UNITS, load_ground_truth, match_views, sequence_metrics

__all__ = [
    "EYE_CORNERS",
    "MM_PER_M",
    "MSI_EPS",
    "METRICS_FORMAT",
    "UNITS",
    "acceleration",
    "acceleration_variance",
    "cvd",
    "cvd_matrix",
    "cvd_per_view",
    "load_ground_truth",
    "match_views",
    "mpve",
    "msi_3d",
    "msi_3d_batch",
    "msi_from_variance",
    "nme",
    "nme_per_sample",
    "read_fit_arrays",
    "sequence_metrics",
    "write_fit_file",
]
