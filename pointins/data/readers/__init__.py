"""Readers: Pointcept scene folders, SemanticKITTI, nuScenes, PLY, PCD, LAS/LAZ, NPY/NPZ, XYZ/TXT.

:func:`read` returns a dict of NumPy arrays in one convention, whatever the source:

==========  ==============  =====================================================================
key         dtype / shape   meaning
==========  ==============  =====================================================================
coord       float32 (N, 3)  always present; finite (see ``nan=``); re-centred: the file's coordinates are
                            ``coord + coord_offset`` (in float64)
coord_offset float64 (3,)  always present; zero unless the file stores coordinates more precisely than float32
                            keeps them (georeferenced LAS/LAZ, double PLY/PCD/NPY, text): then the bounding
                            box's centre rounded to whole units (the rule: ``_common._offset``)
color       float32 (N, 3)  0-255
normal      float32 (N, 3)
strength    float32 (N, 1)  LiDAR intensity / remission in [0, 1] where the format defines a scale
segment     int64 (N,)      semantic class, -1 = ignore (SemanticKITTI / nuScenes: after the learning map)
instance    int64 (N,)      instance id, -1 = none (stuff, unlabeled)
grid_shape  int64 (2,)      organized PCD clouds (HEIGHT > 1): (HEIGHT, WIDTH) of the sensor grid
grid_index  int64 (N,)      organized PCD clouds: each point's row-major place in that grid (kept when points
                            are dropped)
==========  ==============  =====================================================================

Only the keys the file has are returned (``coord`` and ``coord_offset`` always).
Non-finite values: a point whose coordinates are NaN/Inf is refused (``nan="raise"``) or dropped (``nan="drop"``);
a NaN/Inf normal, colour or intensity (PCL writes NaN normals where estimation failed) is set to 0 and the point
kept, in both modes. :func:`read` warns about either; :func:`read_counted` returns the counts instead
(:class:`ReadCounts`), which :class:`PointCloudDataset` and training log.

A broken file raises :class:`DataError` naming the file and the
problem; :class:`PointCloudDataset` can skip such files and report them instead.

Column conventions for headerless text files and plain (N, C) ``.npy`` arrays: 3 columns = xyz,
4 = xyz + strength, 6 = xyz + rgb, 7 = xyz + rgb + strength, 9 = xyz + rgb + normal, 10 = xyz + rgb + normal
+ strength. A header line (``x y z red green blue ...``) or named fields override this.
"""

from pointins.data.readers._common import (
    KITTI_SPLITS,
    LABEL_MAX,
    NUSCENES_CLASSES,
    NUSCENES_THING_CLASSES,
    SEMANTIC_KITTI_CLASSES,
    SEMANTIC_KITTI_THING_CLASSES,
    ReadCounts,
)
from pointins.data.readers._dispatch import SUFFIXES, read, read_counted
from pointins.data.readers._errors import DataError
from pointins.data.readers.datasets import PointCloudDataset, SceneRef, find_scenes

__all__ = [
    "KITTI_SPLITS",
    "LABEL_MAX",
    "NUSCENES_CLASSES",
    "NUSCENES_THING_CLASSES",
    "SEMANTIC_KITTI_CLASSES",
    "SEMANTIC_KITTI_THING_CLASSES",
    "SUFFIXES",
    "DataError",
    "PointCloudDataset",
    "ReadCounts",
    "SceneRef",
    "find_scenes",
    "read",
    "read_counted",
]
