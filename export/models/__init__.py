"""Anomaly-detection models with a memory of normal appearance. Shared pieces live in :mod:`blocks`."""
