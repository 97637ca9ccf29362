"""Line side: capture, inference, judging and publishing of verdicts. Imports without torch."""

__version__ = "0.4.0"
