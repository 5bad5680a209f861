"""Backbones: the Point Transformer V3 encoder on pointins kernels.

>>> import torch, pointins.ops as ops
>>> from pointins.models import build_backbone
>>> model = build_backbone("tiny", in_channels=6).eval()
>>> coord = torch.rand(4000, 3) * 3
>>> vox = ops.voxelize(coord, torch.tensor([0, 4000]), grid_size=0.05, mode="train", seed=0)
>>> batch = {"coord": coord[vox.index], "feat": torch.randn(len(vox), 6), "offsets": vox.offsets,
...          "grid_coord": vox.grid_coord}
>>> out = model(batch)
>>> out.full.shape[1], out.feat.shape[1]      # all stages at the input points; stages 2-4 up-cast
(432, 384)
"""

from pointins.models.point import Level, Point
from pointins.models.ptv3 import (
    PRESETS,
    EncoderOutput,
    PointTransformerV3,
    PTv3Config,
    SubMConv3d,
    build_backbone,
    config_dict,
    load_pointcept_state_dict,
    pointcept_backbone_config,
    pointcept_state_dict,
    save_pointcept_state_dict,
)

__all__ = [
    "PRESETS",
    "EncoderOutput",
    "Level",
    "PTv3Config",
    "Point",
    "PointTransformerV3",
    "SubMConv3d",
    "build_backbone",
    "config_dict",
    "load_pointcept_state_dict",
    "pointcept_backbone_config",
    "pointcept_state_dict",
    "save_pointcept_state_dict",
]
