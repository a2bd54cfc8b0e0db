"""Fidelity reports: paper-style tables (Table 2 / Table 3), figures, overlay videos and Snakemake report
captions (``captions/*.rst``, see :func:`caption_path`)."""

from neuface.report.build import CAPTIONS_DIR, build_report, caption_path
from neuface.report.tables import aggregate, aggregate_per_view, format_value, load_metrics, write_table

__all__ = ["CAPTIONS_DIR", "aggregate", "aggregate_per_view", "build_report", "caption_path", "format_value",
           "load_metrics", "write_table"]
