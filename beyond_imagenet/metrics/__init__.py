"""Metrics: pure functions over numpy arrays of cached model outputs."""
