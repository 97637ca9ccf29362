"""Offline side: train anomaly-detection models on good images and export them for the line.

Needs the ``train`` extra (torch, torchvision, onnx). The line side lives in :mod:`edge` and never imports this.
"""

__version__ = "0.1.0"
