"""Evaluation: error metrics, calibration, classical baselines and plots."""
