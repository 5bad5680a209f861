"""Data: built-in synthetic scenes, readers/writers of real formats, transforms, views, masking, collate.

- :mod:`pointins.data.synthetic` -- indoor rooms and outdoor LiDAR sweeps (``python -m pointins.data.synthetic``)
- :mod:`pointins.data.readers` -- :func:`read` one scan, :class:`PointCloudDataset` a folder of them
- :mod:`pointins.data.writers` -- :func:`write` the same formats
"""

from pointins.data.readers import DataError, PointCloudDataset, find_scenes, read
from pointins.data.writers import write

__all__ = ["DataError", "PointCloudDataset", "find_scenes", "read", "write"]
