"""Line side: capture, inference, judging and publishing of verdicts. Imports without torch."""

__version__ = "0.5.0"
