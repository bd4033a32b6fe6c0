"""Heimdall training service: RF transmitter localisation from multi-receiver recordings."""

__version__ = "0.1.0"
