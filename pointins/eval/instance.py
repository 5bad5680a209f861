"""Instance proposals from predicted offsets: PointGroup's inference as Pointcept's ``PG-v1m2`` runs it
(METHOD.md section 7).

Voxels are shifted by their predicted offsets towards their instance centre; shifted voxels closer than
``radius`` (strictly; PG's ``cluster_thresh`` 1.5 in voxel units, i.e. 1.5 x grid) are linked **within the
same predicted class**, voxels predicted as a class that is not an instance class take no part
(``segment_ignore_index``); connected components (``ops.connected_components``; PG's ball query + breadth-first
search) of at least ``min_cluster`` voxels (``cluster_min_points`` 50) are clusters; a cluster with more than
``min_proposal`` voxels (``cluster_propose_points`` 200) is a proposal, mapped back to every original point
through the voxel map; its class is the cluster's predicted class and its score the mean probability of that
class over the cluster. The benchmark's evaluator then drops proposals under 100 original points.

Two differences from PG, both measure-zero in practice: PG's CUDA ball query keeps at most 1000 neighbours of
a point (we keep every neighbour; the graph is already dense wherever 1000 shifted voxels lie within 1.5
voxels), and Pointcept maps voxel predictions to the original points by nearest kept point (we use each
point's own voxel).

:func:`panoptic_labels` turns the same clusters into per-point panoptic labels (outdoor), and
:func:`agnostic_proposals` clusters the self-supervised offsets with no labels at all (unsupervised
instances: within K-means segments of the features, as SCR does; score = compactness of the shifted points).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["agnostic_proposals", "cluster", "feature_segments", "panoptic_labels", "proposals"]


def cluster(coord, offsets, group, radius: float, min_cluster: int = 50) -> np.ndarray:
    """(V,) cluster id of each voxel (-1: not clustered) of ``coord + offsets`` linked within ``group``
    (negative group = left out)."""
    from pointins import ops

    shifted = torch.as_tensor(np.asarray(coord, np.float32) + np.asarray(offsets, np.float32))
    if len(shifted) == 0:
        return np.zeros(0, np.int64)
    g = torch.as_tensor(np.asarray(group, np.int64))
    cc = ops.connected_components(shifted, torch.tensor([0, len(shifted)]), radius, group=g, min_size=min_cluster)
    return cc.labels.numpy()


def _class_clusters(coord, probs, offsets, thing_classes, radius: float, min_cluster: int):
    """Predicted class of each voxel and its cluster among the voxels of the same thing class."""
    probs = np.asarray(probs, np.float32)
    sem = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    group = np.where(np.isin(sem, np.asarray(list(thing_classes), np.int64)), sem, -1)
    return sem, cluster(coord, offsets, group, radius, min_cluster)


def _masks(labels_v: np.ndarray, inverse: np.ndarray, min_proposal: int, unit: str = "voxels"):
    """Per-point cluster ids and the clusters with more than ``min_proposal`` voxels (``unit="points"``:
    original points)."""
    lab_p = labels_v[inverse]
    k = int(labels_v.max()) + 1 if labels_v.size and labels_v.max() >= 0 else 0
    lab = labels_v if unit == "voxels" else lab_p
    sizes = np.bincount(lab[lab >= 0], minlength=k)
    return lab_p, [c for c in range(k) if sizes[c] > min_proposal]


def proposals(
    coord: np.ndarray,
    probs: np.ndarray,
    offsets: np.ndarray,
    inverse: np.ndarray,
    thing_classes: Sequence[int],
    radius: float,
    min_cluster: int = 50,
    min_proposal: int = 200,
) -> list[dict]:
    """Instance proposals ``[{"mask": (N,) bool, "label", "score"}]`` of one scene (see the module docstring).
    ``coord``/``probs``/``offsets`` are per voxel, ``inverse`` maps the N original points to voxels; the
    defaults are Sonata's linear-probe settings (radius: pass 1.5 x the grid)."""
    probs = np.asarray(probs, np.float32)
    sem, lab_v = _class_clusters(coord, probs, offsets, thing_classes, radius, min_cluster)
    lab_p, keep = _masks(lab_v, inverse, min_proposal)
    out = []
    for c in keep:
        vox = lab_v == c
        label = int(sem[vox][0])
        out.append({"mask": lab_p == c, "label": label, "score": float(probs[vox, label].mean())})
    return out


def panoptic_labels(
    coord: np.ndarray,
    probs: np.ndarray,
    offsets: np.ndarray,
    inverse: np.ndarray,
    thing_classes: Sequence[int],
    radius: float,
    min_cluster: int = 15,
) -> tuple[np.ndarray, np.ndarray]:
    """Per original point: predicted class and instance id (clusters of thing classes; -1 for stuff and for
    thing points left out of every cluster)."""
    sem, lab_v = _class_clusters(coord, probs, offsets, thing_classes, radius, min_cluster)
    return sem[inverse].astype(np.int64), lab_v[inverse].astype(np.int64)


def feature_segments(feat, k: int = 20, seed: int = 0) -> np.ndarray:
    """(V,) K-means segment of each voxel (cosine, ``ops.kmeans``): the label-free grouping SCR clusters in."""
    from pointins import ops

    x = torch.as_tensor(feat).float()
    if len(x) == 0:
        return np.zeros(0, np.int64)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return ops.kmeans(x, torch.tensor([0, len(x)]), k=k, iters=20, metric="cosine", seed=seed).labels.numpy()


def agnostic_proposals(
    coord: np.ndarray,
    offsets: np.ndarray,
    inverse: np.ndarray,
    radius: float,
    group: np.ndarray | None = None,
    min_cluster: int = 50,
    min_proposal: int = 100,
) -> list[dict]:
    """Class-agnostic proposals from offsets alone: shifted voxels are linked within ``group`` (e.g.
    :func:`feature_segments`, as SCR does in pretraining; None = all together); score = 1 / (1 + mean distance
    of the cluster's shifted points to their mean / radius), so tight clusters (points agreeing on one centre)
    rank first."""
    coord = np.asarray(coord, np.float32)
    shifted = coord + np.asarray(offsets, np.float32)
    group = np.zeros(len(coord), np.int64) if group is None else np.asarray(group, np.int64)
    lab_v = cluster(coord, offsets, group, radius, min_cluster)
    lab_p, keep = _masks(lab_v, inverse, min_proposal, unit="points")
    out = []
    for c in keep:
        s = shifted[lab_v == c]
        spread = float(np.linalg.norm(s - s.mean(0), axis=1).mean())
        out.append({"mask": lab_p == c, "label": 0, "score": 1.0 / (1.0 + spread / radius)})
    return out
