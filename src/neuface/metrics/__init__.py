"""Fidelity metrics of face-mesh annotations (NeuFace §3.4, §4.1): MSI_3D, CVD, NME (bounding-box and
eye-corner normalised), MPVE (similarity-aligned and unaligned).

Pure functions live in :mod:`neuface.metrics.core`; :func:`sequence_metrics` computes all of them for one fit
file. Units: millimetres for 3D quantities, percent for NME (see ``docs/metrics.md``).
"""

from neuface.metrics.core import (
    EYE_CORNERS,
    MM_PER_M,
    MSI_EPS,
    NME_NORMS,
    acceleration,
    acceleration_variance,
    cvd,
    cvd_matrix,
    cvd_per_view,
    landmark_normaliser,
    mpve,
    mpve_aligned,
    mpve_aligned_per_sample,
    msi_3d,
    msi_3d_batch,
    msi_from_variance,
    nme,
    nme_bbox_per_sample,
    nme_per_sample,
    similarity_align,
)
from neuface.metrics.fitfile import read_fit_arrays, write_fit_file
from neuface.metrics.sequence import (
    METRICS_FORMAT,
    METRICS_VERSION,
    UNITS,
    load_ground_truth,
    match_views,
    sequence_metrics,
)

__all__ = [
    "EYE_CORNERS",
    "MM_PER_M",
    "MSI_EPS",
    "METRICS_FORMAT",
    "METRICS_VERSION",
    "NME_NORMS",
    "UNITS",
    "acceleration",
    "acceleration_variance",
    "cvd",
    "cvd_matrix",
    "cvd_per_view",
    "landmark_normaliser",
    "load_ground_truth",
    "match_views",
    "mpve",
    "mpve_aligned",
    "mpve_aligned_per_sample",
    "msi_3d",
    "msi_3d_batch",
    "msi_from_variance",
    "nme",
    "nme_bbox_per_sample",
    "nme_per_sample",
    "read_fit_arrays",
    "sequence_metrics",
    "similarity_align",
    "write_fit_file",
]
