"""Persistence in the acquisition service's format: SQL tables and IQ objects."""
