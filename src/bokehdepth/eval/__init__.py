"""Metric-depth evaluation: metrics, the dataset runner and plots."""
