"""PointINS: instance-aware self-supervised pretraining of 3D point-cloud backbones.

Subpackages: :mod:`pointins.ops` (point-cloud kernels), :mod:`pointins.triton` (Triton kernels).
"""

__version__ = "0.1.0"
