"""Line side: capture, inference, scoring and publishing of verdicts. Imports without torch."""

__version__ = "0.1.0"
