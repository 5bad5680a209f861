"""A look at what the teacher has found in one view: K-means segments, SCR pseudo-instances and the predicted
instance centres, as PNG renders and coloured PLY files (written next to checkpoints by
``python -m pointins.train``; open the PLYs in MeshLab/CloudCompare).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pointins.data.show import instance_colors, render, write_png
from pointins.data.writers import write_ply

__all__ = ["teacher_look"]


def _panel(coord: np.ndarray, colors: np.ndarray, view: str, size=(480, 360)) -> np.ndarray:
    return render(coord, colors, view=view, size=size, point_px=2, shade=False, fit=0.99)


@torch.no_grad()
def teacher_look(model, details: dict, batch: dict, out_prefix: str | Path, cloud: int = 0) -> list[Path]:
    """Write ``PREFIX_{segments,instances,centres}.{png,ply}`` and ``PREFIX.png`` (the three side by side)
    for teacher cloud ``cloud`` (global view 0 of sample 0 by default) of a step run with ``details=True``.

    Points are shown in the original scene frame at the teacher's up-cast resolution; the centres panel draws
    each point at its predicted centre ``x + o~`` (after ODR/SCR), coloured by pseudo-instance.
    """
    from pointins.ssl.model import _cloud_of

    t_out, xyz = details["teacher"], details["t_xyz"]
    info = details.get("scr")
    g = batch["global"]
    off = t_out.offsets
    lo, hi = int(off[cloud]), int(off[cloud + 1])
    sel = slice(lo, hi)
    if info is None:  # offset branch off or still warming up: run the teacher's targets for the picture
        cell = model.student.backbone.config.grid_size * 2**model.student.backbone.config.upcast_stage
        if model.teacher.offset is not None:
            from pointins.ssl.matching import vectors_to_original

            t_cloud = _cloud_of(off, t_out.coord.shape[0])
            o = vectors_to_original(model.teacher.offset(t_out.feat).float(), g["transform"], t_cloud)
            _, info = model._targets(t_out.feat, xyz, o, off, 0, cell)
    # the view's input points in the original frame, labelled through their up-cast point
    ilo, ihi = int(g["offsets"][cloud]), int(g["offsets"][cloud + 1])
    from pointins.ssl.matching import points_to_original

    icloud = torch.full((ihi - ilo,), cloud, dtype=torch.long, device=g["coord"].device)
    xin = points_to_original(g["coord"][ilo:ihi].float(), g["transform"], g["shift"], icloud).cpu().numpy()
    to_u = (t_out.point_to_upcast[ilo:ihi] - lo).cpu().numpy()
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    panels = []
    if info is not None:
        seg = info.segments[sel].cpu().numpy()
        inst = info.instances[sel].cpu().numpy()
        centres = info.centres[sel].float().cpu().numpy()
    else:
        from pointins import ops

        f = torch.nn.functional.normalize(t_out.feat[sel].float(), dim=1)
        seg = ops.kmeans(f, None, k=model.cfg.kmeans_k, iters=model.cfg.kmeans_iters, metric="cosine").labels
        seg = seg.cpu().numpy()
        inst = centres = None
    items = [("segments", xin, instance_colors(seg)[to_u], "top")]
    if inst is not None:
        ids = inst - (inst[inst >= 0].min() if (inst >= 0).any() else 0)
        ids[inst < 0] = -1
        inst_col = instance_colors(ids)
        items += [("instances", xin, inst_col[to_u], "top"), ("centres", centres, inst_col, "top")]
    for name, pts, col, view in items:
        png = prefix.parent / f"{prefix.name}_{name}.png"
        ply = prefix.parent / f"{prefix.name}_{name}.ply"
        img = _panel(pts, col, view)
        write_png(png, img)
        write_ply(ply, {"coord": pts.astype(np.float32), "color": col.astype(np.float32)})
        panels.append(img)
        written += [png, ply]
    strip = np.concatenate([np.concatenate([p, np.full((p.shape[0], 6, 3), 255, np.uint8)], 1) for p in panels], 1)
    combo = prefix.parent / f"{prefix.name}.png"
    write_png(combo, strip)
    written.append(combo)
    return written
