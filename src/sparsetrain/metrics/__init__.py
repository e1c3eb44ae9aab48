"""Measurements of a sparse model: density reports (FLOPs and channel stats come later)."""

from sparsetrain.metrics.report import DensityReport, density_report

__all__ = ["DensityReport", "density_report"]
