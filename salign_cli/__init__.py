"""salign: few-label 3D CT/MRI segmentation with Self-Supervised Alignment Learning."""

__version__ = "0.1.0"
