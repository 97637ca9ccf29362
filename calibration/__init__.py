"""Thresholds a plant engineer can trust: chosen from good (and bad) images, with their uncertainty, written into
the engine's sidecar, and a report to look at. Runs any engine backend; needs no torch."""
