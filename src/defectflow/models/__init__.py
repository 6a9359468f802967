"""Anomaly models: the backend registry, fitting with cross-fitted calibration scores, scoring stored features, threshold calibration, memory projections."""
