"""Frozen-feature probes (METHOD.md section 7): load a pretrained encoder, extract its un-pooled all-stage
features per scene, train PointGroup heads on them (Pointcept's ``PG-v1m2`` as Sonata's linear-probe configs
set it up), or fine-tune everything.

* :func:`load_encoder` reads ``backbone.pt`` / a training checkpoint / a run folder (or builds a random
  ``"scratch"`` encoder for the baseline).
* :func:`prepare` grid-samples a labelled scene (one point per voxel, the training views' centre shift) and
  keeps the point -> voxel map, so predictions made on voxels are scored on every original point. As
  Pointcept's ``InstanceParser``, points of classes that are not instance classes carry no instance, and the
  offset targets point at the centroid of the instance's voxels.
* :func:`augment` is the Sonata instance probe's training augmentation (``insseg-sonata-v1m1-0a-scannet-pg-lin``).
* :func:`extract` runs the frozen encoder (eval mode: deterministic) and keeps ``full`` features (float16).
* :class:`ProbeHeads` + :func:`train_probe`: PG-v1m2's heads (a Linear semantic head; the offset "bias" head
  Linear -> BatchNorm1d(eps 1e-3, momentum 0.01) -> ReLU -> Linear), CE + Lovasz-softmax on labels, L1 + cosine
  on offsets of instance points; AdamW (lr 0.002, weight decay 0.05) with OneCycleLR (5% warm-up, cosine, div
  10 / 1000), as the config. Trained on random voxel minibatches of frozen features (optionally re-augmented
  and re-extracted every epoch), or end to end (fine-tuning).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Encoder",
    "ProbeHeads",
    "Scene",
    "augment",
    "extract",
    "load_encoder",
    "lovasz_softmax",
    "one_cycle",
    "prepare",
    "probe_loss",
    "train_probe",
]


class EvalError(RuntimeError):
    """A checkpoint or dataset that cannot be evaluated (the message says why and what to do)."""


# ------------------------------------------------------------------------------------------------
# encoders
# ------------------------------------------------------------------------------------------------


@dataclass
class Encoder:
    """A pretrained (or random) PTv3 encoder with what evaluation needs to feed it."""

    backbone: nn.Module
    feat_keys: tuple[str, ...]
    grid_size: float
    source: str
    offset_head: nn.Module | None = None  # the SSL offset head (unsupervised instances), when saved
    step: int | None = None
    train_config: dict = field(default_factory=dict)


def _latest(folder: Path) -> Path:
    from pointins.train import CheckpointError, latest_checkpoint

    try:
        return latest_checkpoint(folder)
    except CheckpointError as e:
        raise EvalError(str(e).replace("pointins:", "pointins.evaluate:", 1)) from None


def _read(path: Path) -> dict:
    # weights_only: a checkpoint is data. A pickle that would run code (os.system, eval, ...) is refused.
    from pointins._torchio import CheckpointReadError, torch_load

    try:
        obj = torch_load(path)
    except CheckpointReadError as e:
        raise EvalError(f"pointins.evaluate: {e} Pass a backbone.pt or ckpt_*.pt written by python -m pointins.train."
                        ) from None  # fmt: skip
    if not isinstance(obj, dict) or "backbone_config" not in obj:
        raise EvalError(f"pointins.evaluate: {path} is not a pointins checkpoint (no backbone_config); pass the "
                        "backbone.pt or ckpt_*.pt of a python -m pointins.train run.")  # fmt: skip
    return obj


def load_encoder(
    checkpoint: str | os.PathLike,
    *,
    feat_keys=None,
    backbone: str = "tiny",
    grid_size: float = 0.04,
    seed: int = 0,
) -> Encoder:
    """The encoder of ``checkpoint``: a ``backbone.pt``, a ``ckpt_*.pt`` or a run folder (its ``backbone.pt``,
    else its ``latest`` checkpoint). ``"scratch"`` builds a randomly initialised ``backbone`` preset (seeded)
    taking ``feat_keys`` at ``grid_size`` -- the no-pretraining baseline."""
    from pointins.models import PointTransformerV3, PTv3Config, build_backbone
    from pointins.ssl.offsets import OffsetHead

    if str(checkpoint) == "scratch":
        if feat_keys is None:
            raise ValueError("load_encoder('scratch') needs feat_keys (the inputs of the dataset).")
        keys = tuple(feat_keys)
        ch = sum({"coord": 3, "color": 3, "normal": 3, "strength": 1}[k] for k in keys)
        torch.manual_seed(seed)
        return Encoder(build_backbone(backbone, in_channels=ch, grid_size=grid_size), keys, grid_size,
                       f"scratch ({backbone}, seed {seed})")  # fmt: skip
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if (path / "backbone.pt").exists():
            path = path / "backbone.pt"
        elif (path / "latest").exists():
            path = _latest(path)
        else:
            raise EvalError(f"pointins.evaluate: {path} has neither backbone.pt nor latest; is it a run folder?")
    if not path.exists():
        raise EvalError(f"pointins.evaluate: checkpoint {path} does not exist.")
    obj = _read(path)
    try:
        return _build_encoder(obj, path, grid_size, PointTransformerV3, PTv3Config, OffsetHead)
    except EvalError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError, IndexError) as e:
        raise EvalError(f"pointins.evaluate: {path} does not hold a usable encoder ({type(e).__name__}: "
                        f"{str(e)[:300]}); it is damaged or not a pointins checkpoint.") from None  # fmt: skip


def _check_config_bounds(cfg: dict, path: Path) -> None:
    """A crafted backbone_config must not make even the shape-only (meta) model huge: PTv3 encoders have a
    handful of stages of at most a few dozen blocks and a few thousand channels."""

    def ints(v):
        return isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)

    from pointins.models import PTv3Config

    default = PTv3Config()
    depths, channels = cfg.get("depths", default.depths), cfg.get("channels", default.channels)
    ok = (ints(depths) and ints(channels) and 1 <= len(depths) <= 16 and all(0 <= d <= 256 for d in depths)
          and all(1 <= c <= 16384 for c in channels) and isinstance(cfg.get("in_channels", 9), int)
          and 1 <= cfg.get("in_channels", 9) <= 4096)  # fmt: skip
    if not ok:
        raise EvalError(f"pointins.evaluate: {path}: implausible backbone_config (depths {str(depths)[:60]}, channels "
                        f"{str(channels)[:60]}); the checkpoint is damaged or crafted.")  # fmt: skip


def _build_encoder(obj: dict, path: Path, grid_size: float, PointTransformerV3, PTv3Config, OffsetHead) -> Encoder:
    if not isinstance(obj["backbone_config"], dict):
        raise EvalError(f"pointins.evaluate: {path}: backbone_config is not a dict.")
    cfg = dict(obj["backbone_config"])
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    _check_config_bounds(cfg, path)
    if "backbone" in obj:
        state, heads = obj["backbone"], obj.get("heads", {})
    elif "student" in obj:
        st = obj["student"]
        state = {k[len("backbone.") :]: v for k, v in st.items() if k.startswith("backbone.")}
        heads = {"offset": {k[len("offset.") :]: v for k, v in st.items() if k.startswith("offset.")}}
    else:
        raise EvalError(f"pointins.evaluate: {path} holds no encoder weights (neither 'backbone' nor 'student').")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvalError(f"pointins.evaluate: {path}: the encoder weights are not a state dict of tensors.")
    with torch.device("meta"):  # shapes first: a crafted config cannot make us allocate a huge model
        shape_only = PointTransformerV3(PTv3Config(**cfg))
    want = {k: tuple(v.shape) for k, v in shape_only.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        diff = sorted(set(want) ^ set(got))[:5] or [k for k in want if want[k] != got.get(k)][:5]
        raise EvalError(f"pointins.evaluate: {path}: the weights do not match its backbone_config (first differences: "
                        f"{diff}).")  # fmt: skip
    model = PointTransformerV3(PTv3Config(**cfg))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EvalError(f"pointins.evaluate: {path} does not match its backbone_config (missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]}).")  # fmt: skip
    if not heads.get("offset") and (path.parent / "latest").exists() and "backbone" in obj:
        # a backbone.pt written before the heads were saved: the run's latest checkpoint has them
        try:
            ck = _read(_latest(path.parent))
            heads = {"offset": {k[len("offset.") :]: v for k, v in ck["student"].items() if k.startswith("offset.")}}
        except (EvalError, KeyError, OSError):
            pass
    off = None
    if heads.get("offset"):
        w = heads["offset"]
        off = OffsetHead(w["mlp.0.weight"].shape[1], w["mlp.0.weight"].shape[0])
        off.load_state_dict(w)
    tc = obj.get("config", {})
    grid = float(tc.get("views", {}).get("grid_size", cfg.get("grid_size", grid_size)))
    return Encoder(model, tuple(obj.get("feat_keys", ("coord", "color", "normal"))), grid, str(path), off,
                   obj.get("step"), tc)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# scenes and features
# ------------------------------------------------------------------------------------------------


@dataclass
class Scene:
    """One labelled scene, grid-sampled: voxel-level inputs and labels plus the point -> voxel map."""

    name: str
    batch: dict  # backbone input of the voxels: coord, feat, offsets, grid_coord
    coord: np.ndarray  # (V, 3) voxel points, original frame
    segment: np.ndarray  # (V,) label of each kept point (-1 = ignore)
    instance: np.ndarray  # (V,) instance id of each kept point (-1 = none)
    centroid_offset: np.ndarray  # (V, 3) ground-truth instance centroid - point (NaN without an instance)
    inverse: np.ndarray  # (N,) voxel of every original point
    point_segment: np.ndarray  # (N,) labels of the original points
    point_instance: np.ndarray  # (N,)
    point_coord: np.ndarray  # (N, 3)
    feat: torch.Tensor | None = None  # (V, C) float16 frozen features (after extract)
    ssl_offsets: np.ndarray | None = None  # (V, 3) SSL offset head's prediction at each voxel (unsupervised)
    source: dict | None = None  # the scene as read (kept for re-augmentation)

    def __len__(self) -> int:
        return len(self.coord)


def prepare(scene: dict, grid_size: float, feat_keys, seed: int = 0, name: str | None = None,
            thing_classes=None, keep_source: bool = False) -> Scene:  # fmt: skip
    """Grid-sample a labelled scene for evaluation (see the module docstring).

    ``thing_classes``: the instance classes; voxels of other classes get no instance and no offset target
    (Pointcept's ``InstanceParser(segment_ignore_index=...)``; None: every instance id counts). The offset target
    of a voxel is its instance's centroid over the instance's voxels minus the voxel's point, as
    ``InstanceParser`` computes it after ``GridSample``. ``keep_source``: keep ``scene`` for :func:`augment`."""
    from pointins import ops
    from pointins.data import transforms as T
    from pointins.data.collate import features

    name = name or str(scene.get("name", "scene"))
    coord = np.ascontiguousarray(scene["coord"], np.float32)
    n = len(coord)
    if n == 0:
        raise EvalError(f"pointins.evaluate: scene {name} has no points.")
    if not np.isfinite(coord).all():
        raise EvalError(f"pointins.evaluate: scene {name} has NaN/Inf coordinates; clean or drop the scene.")
    seg = np.asarray(scene.get("segment", np.full(n, -1)), np.int64).reshape(-1)
    ins = np.asarray(scene.get("instance", np.full(n, -1)), np.int64).reshape(-1)
    vox = ops.voxelize(torch.from_numpy(coord), None, grid_size, mode="train", seed=seed)
    idx, inv = vox.index.numpy(), vox.inverse.numpy()
    v = {k: np.asarray(scene[k])[idx] for k in ("coord", "color", "normal", "strength") if k in scene}
    v = T.center_shift(T.start_view(v))
    v["coord"] = v["coord"].astype(np.float32)
    feat = torch.from_numpy(features(v, feat_keys))
    batch = {"coord": torch.from_numpy(v["coord"]), "feat": feat, "offsets": torch.tensor([0, len(idx)]),
             "grid_coord": vox.grid_coord}  # fmt: skip
    vseg, vins = seg[idx], ins[idx].copy()
    if thing_classes is not None:
        vins[~np.isin(vseg, np.asarray(list(thing_classes), np.int64))] = -1
    cen = np.full((len(idx), 3), np.nan, np.float32)
    has = vins >= 0
    if has.any():
        ids, rows = np.unique(vins[has], return_inverse=True)
        pts = coord[idx][has].astype(np.float64)
        sums = np.zeros((len(ids), 3))
        np.add.at(sums, rows, pts)
        centre = sums / np.bincount(rows, minlength=len(ids))[:, None]
        cen[has] = centre[rows] - pts
    out = Scene(name, batch, coord[idx], vseg, vins, cen, inv, seg, ins, coord)
    if keep_source:
        out.source = scene
    return out


def augment(scene: dict, rng: np.random.Generator, grid_size: float, elastic: bool = True) -> dict:
    """The training augmentation of Sonata's instance probe (``insseg-sonata-v1m1-0a-scannet-pg-lin.py``):
    CenterShift, RandomDropout (20% of the points, half of the time), rotation about z (p 0.5, +-180 deg,
    about the origin), tilts about x and y (p 0.5 each, +-180/64 deg, about the box centre), RandomScale
    0.9-1.1, flips, jitter (0.005, clip 0.02), ElasticDistortion (p 0.95), colour auto-contrast (p 0.2),
    translation (p 0.95, 0.05) and jitter (p 0.95, 0.05), GridSample, then SphereCrop keeping 80% of the
    voxels nearest a random one and CenterShift in x, y. Returns a new scene dict (labels carried along).
    ``elastic=False`` leaves the distortion out (outdoor sweeps: its 0.2 m lattice over a 100 m sweep is
    large, and Pointcept's outdoor configs do not use it)."""
    import math

    from pointins.data import transforms as T

    keys = [k for k in ("coord", "color", "normal", "strength", "segment", "instance") if k in scene]
    d = {k: np.array(scene[k], copy=True) for k in keys}
    d["coord"] = d["coord"].astype(np.float64)
    d = T.center_shift(T.start_view(d))
    n = len(d["coord"])
    if rng.random() < 0.5 and n > 1:  # RandomDropout(dropout_ratio=0.2, dropout_application_ratio=0.5)
        d = T.take(d, np.sort(rng.choice(n, int(n * 0.8), replace=False)))
    T.random_rotate(d, rng, "z", (-math.pi, math.pi), p=0.5, about="origin")
    T.random_rotate(d, rng, "x", (-math.pi / 64, math.pi / 64), p=0.5, about="bbox")
    T.random_rotate(d, rng, "y", (-math.pi / 64, math.pi / 64), p=0.5, about="bbox")
    T.random_scale(d, rng, (0.9, 1.1))
    T.random_flip(d, rng, 0.5)
    T.random_jitter(d, rng, 0.005, 0.02)
    if elastic:
        d = T.elastic_distortion(d, rng, p=0.95)
    if "color" in d:
        T.color_jitter(d, rng, auto_contrast_p=0.2, translate=0.05, std=0.05, p=0.95)
    d = T.grid_sample(d, grid_size, "train", rng)
    m = len(d["coord"])
    if m > 1:
        d = T.sphere_crop(d, rng, max_points=max(1, int(0.8 * m)))
    d = T.center_shift(d, apply_z=False)
    d["coord"] = d["coord"].astype(np.float32)
    return {k: d[k] for k in keys}


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def extract(encoder: Encoder, scenes: list[Scene], device="cpu", progress: bool = True, ssl_offsets: bool = False):
    """Fill ``scene.feat`` with the frozen encoder's ``full`` features (float16, CPU); with ``ssl_offsets`` also
    ``scene.ssl_offsets`` from the pretrained offset head (up-cast level, given to every voxel)."""
    from pointins._progress import progress_bar

    model = encoder.backbone.to(device).eval()
    head = encoder.offset_head.to(device).eval() if (ssl_offsets and encoder.offset_head is not None) else None
    if ssl_offsets and head is None:
        raise EvalError(
            f"pointins.evaluate: {encoder.source} has no SSL offset head (a semantic-only run, or an old "
            "backbone.pt); unsupervised instances need a PointINS run with the offset branch."
        )
    bar = progress_bar(total=len(scenes), desc="features", enabled=progress)
    for s in scenes:
        out = model(_to(s.batch, device), return_upcast=head is not None, return_full=True)
        s.feat = out.full.to(torch.float16).cpu()
        if head is not None:
            s.ssl_offsets = head(out.feat.float())[out.point_to_upcast].float().cpu().numpy()
        bar.update(1)
    bar.close()
    return scenes


# ------------------------------------------------------------------------------------------------
# heads and losses
# ------------------------------------------------------------------------------------------------


class ProbeHeads(nn.Module):
    """PointGroup (Pointcept ``PG-v1m2``) heads on encoder features: ``semantic`` one Linear to the classes;
    ``offset`` (PG's ``bias_head``, with ``offsets=True``) Linear(C, C) -> BatchNorm1d(C, eps 1e-3, momentum 0.01)
    -> ReLU -> Linear(C, 3).

    ``kind="linear"``: the heads sit on the frozen features (Sonata's linear probe). ``"decoder"``: a trainable
    per-point trunk (Linear -> BatchNorm -> ReLU, twice, ``hidden`` channels) comes first; Sonata's decoder probe
    trains a PTv3 decoder (4 unpooling stages with attention blocks, 64 channels) there instead: ours has no
    spatial context of its own. Features are standardised with fixed per-channel statistics first (an affine
    map, so a linear probe stays linear; Pointcept feeds them raw -- this only conditions the optimisation)."""

    def __init__(self, in_channels: int, num_classes: int, offsets: bool = False, kind: str = "linear",
                 hidden: int = 256):  # fmt: skip
        super().__init__()
        if kind not in ("linear", "decoder"):
            raise ValueError(f"ProbeHeads: kind must be 'linear' or 'decoder', got {kind!r}.")
        self.kind = kind
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))
        c = in_channels
        if kind == "decoder":
            self.trunk = nn.Sequential(
                nn.Linear(c, hidden), nn.BatchNorm1d(hidden, eps=1e-3, momentum=0.01), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden, eps=1e-3, momentum=0.01), nn.ReLU(),
            )  # fmt: skip
            c = hidden
        else:
            self.trunk = nn.Identity()
        self.semantic = nn.Linear(c, num_classes)
        self.offset = (
            nn.Sequential(nn.Linear(c, c), nn.BatchNorm1d(c, eps=1e-3, momentum=0.01), nn.ReLU(), nn.Linear(c, 3))
            if offsets
            else None
        )

    @torch.no_grad()
    def set_statistics(self, feat: torch.Tensor) -> None:
        f = feat.float()
        self.mean.copy_(f.mean(0).to(self.mean.device))
        self.std.copy_(f.std(0).clamp_min(1e-4).to(self.std.device))

    def forward(self, feat: torch.Tensor):
        x = self.trunk((feat.float() - self.mean) / self.std)
        return self.semantic(x), (self.offset(x) if self.offset is not None else None)


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    gts = fg_sorted.sum()
    inter = gts - fg_sorted.cumsum(0)
    union = gts + (1 - fg_sorted).cumsum(0)
    jac = 1.0 - inter / union
    if len(jac) > 1:
        jac[1:] = jac[1:] - jac[:-1]
    return jac


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Lovasz-softmax loss (Berman et al. 2018): the convex surrogate of 1 - IoU, averaged over the classes
    present in ``labels``. ``probs`` (N, C) softmax outputs."""
    keep = labels != ignore_index
    probs, labels = probs[keep], labels[keep]
    if labels.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in torch.unique(labels).tolist():
        fg = (labels == c).to(probs.dtype)
        err = (fg - probs[:, c]).abs()
        err_sorted, perm = torch.sort(err, descending=True)
        losses.append(torch.dot(err_sorted, _lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def probe_loss(logits, offsets, segment, centroid_offset, lovasz: bool = False, ignore_index: int = -1):
    """CE (+ Lovasz) on labels; on offsets PG-v1m2's loss, the mean L1 distance plus the mean (1 - cosine) to the
    ground-truth centroid offsets over the voxels that have one (PG adds -cos: the same gradient)."""
    valid = segment != ignore_index
    if valid.any():
        loss = F.cross_entropy(logits[valid], segment[valid])
        if lovasz:
            loss = loss + lovasz_softmax(logits.softmax(-1), segment, ignore_index)
    else:
        loss = logits.sum() * 0.0
    parts = {"ce": float(loss.detach())}
    if offsets is not None:
        has = torch.isfinite(centroid_offset).all(1)
        if has.any():
            from pointins.ssl.offsets import offset_loss

            # PG-v1m2's bias loss: L1 + (-cos) with its 1e-8 norm guard (the pretraining loss guards at 1 cm)
            lo = offset_loss(offsets[has].float(), centroid_offset[has], eps=1e-8).mean()
            loss = loss + lo
            parts["offset"] = float(lo.detach())
    return loss, parts


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


def one_cycle(step: int, total: int, pct_start: float = 0.05, div_factor: float = 10.0,
              final_div_factor: float = 1000.0) -> float:  # fmt: skip
    """The lr factor (of the maximum lr) of ``torch.optim.lr_scheduler.OneCycleLR`` with cosine annealing after
    ``step`` steps of ``total`` (Sonata's probe schedule: ``pct_start`` 0.05, ``div_factor`` 10,
    ``final_div_factor`` 1000): from 1/div up to 1 over the first ``pct_start`` of the steps, then down to
    1/(div x final_div)."""
    lo, hi, end = 1.0 / div_factor, 1.0, 1.0 / (div_factor * final_div_factor)
    up = float(pct_start * total) - 1
    down = float(total) - 1

    def cos(a, b, t):
        return b + (a - b) / 2.0 * (math.cos(math.pi * t) + 1)

    if step <= up:
        return cos(lo, hi, step / up) if up > 0 else hi
    return cos(hi, end, min(1.0, (step - up) / max(down - up, 1e-12)))


def _stack(scenes: list[Scene]):
    feat = torch.cat([s.feat for s in scenes])
    seg = torch.from_numpy(np.concatenate([s.segment for s in scenes]))
    cen = torch.from_numpy(np.concatenate([s.centroid_offset for s in scenes]))
    return feat, seg, cen


def train_probe(
    scenes: list[Scene],
    heads: ProbeHeads,
    *,
    epochs: int = 20,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    batch_points: int = 32768,
    lovasz: bool = True,
    encoder: Encoder | None = None,
    finetune: bool | None = None,
    augment_epochs: bool = False,
    grid_size: float | None = None,
    thing_classes=None,
    elastic: bool = True,
    backbone_lr_scale: float = 0.1,
    seed: int = 0,
    device="cpu",
    progress: bool = True,
    log=None,
) -> list[float]:
    """Train ``heads`` on ``scenes``; returns the loss of every step.

    Frozen probe (the default): scenes need :func:`extract`'s features; each step is a random minibatch of
    ``batch_points`` voxels from all scenes, ``epochs`` passes over the voxels. With ``augment_epochs`` (needs
    ``encoder``, ``grid_size`` and scenes prepared with ``keep_source=True``) every epoch trains on a fresh
    :func:`augment` of each scene, its features extracted again by the frozen encoder. Fine-tuning
    (``finetune=True``, or ``encoder`` given without ``augment_epochs``): each step runs the encoder (train mode)
    on one scene, ``epochs`` passes over the scenes, the encoder at ``lr * backbone_lr_scale`` (Sonata's
    ``param_dicts`` for the blocks). AdamW (``weight_decay``) with :func:`one_cycle` over all the steps.
    """
    from pointins._progress import progress_bar

    if not scenes:
        raise EvalError("pointins.evaluate: no training scenes for the probe.")
    if finetune is None:
        finetune = encoder is not None and not augment_epochs
    if (finetune or augment_epochs) and encoder is None:
        raise EvalError("train_probe: fine-tuning and per-epoch augmentation need encoder=.")
    if augment_epochs and (grid_size is None or any(s.source is None for s in scenes)):
        raise EvalError("train_probe: augment_epochs needs grid_size= and scenes prepared with keep_source=True.")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    heads.to(device).train()
    if finetune:
        model = encoder.backbone.to(device)
        with torch.no_grad():  # input statistics from the initial features of a few scenes
            model.eval()
            sample = [model(_to(s.batch, device)).full for s in scenes[:4]]
            heads.set_statistics(torch.cat(sample))
        model.train()
        params = [{"params": heads.parameters(), "lr": lr},
                  {"params": model.parameters(), "lr": lr * backbone_lr_scale}]  # fmt: skip
        total = epochs * len(scenes)
    else:
        if any(s.feat is None for s in scenes):
            raise EvalError("train_probe: call extract() first (or pass encoder= to fine-tune).")
        feat, seg, cen = _stack(scenes)
        heads.set_statistics(feat[torch.randperm(len(feat), generator=gen)[:200_000]])
        params = [{"params": heads.parameters(), "lr": lr}]
        per_epoch = max(1, math.ceil(len(feat) / batch_points))  # augmented epochs: about as many voxels
        total = epochs * per_epoch
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    losses: list[float] = []
    bar = progress_bar(total=total, desc="finetune" if finetune else "probe", enabled=progress)
    step = 0
    for ep in range(epochs):
        if finetune:
            batches = torch.randperm(len(scenes), generator=gen).tolist()
        else:
            if augment_epochs and ep > 0:  # epoch 0 trains on the scenes as prepared
                views = [prepare(augment(s.source, rng, grid_size, elastic), grid_size, encoder.feat_keys,
                                 seed=int(rng.integers(2**31)), name=s.name, thing_classes=thing_classes)
                         for s in scenes]  # fmt: skip
                extract(encoder, views, device, progress=False)
                feat, seg, cen = _stack(views)
            perm = torch.randperm(len(feat), generator=gen)
            size = max(1, math.ceil(len(perm) / per_epoch))
            batches = [perm[i : i + size] for i in range(0, len(perm), size)][:per_epoch]
        for b in batches:
            f = one_cycle(min(step, total - 1), total)
            for g, lr0 in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr0 * f
            if finetune:
                s = scenes[b]
                x = model(_to(s.batch, device)).full
                y = torch.from_numpy(s.segment).to(device)
                c = torch.from_numpy(s.centroid_offset).to(device)
            else:
                x, y, c = feat[b].to(device), seg[b].to(device), cen[b].to(device)
            if len(x) < 2:  # BatchNorm needs two samples
                continue
            logits, off = heads(x)
            loss, parts = probe_loss(logits, off, y, c, lovasz)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if log is not None:
                log({"step": step, "epoch": ep, "loss": losses[-1], **parts, "lr": opt.param_groups[0]["lr"]})
    bar.close()
    heads.eval()
    if finetune:
        encoder.backbone.eval()
    if not losses:
        raise EvalError("pointins.evaluate: the probe made no step (every minibatch had fewer than 2 voxels).")
    if not math.isfinite(losses[-1]):
        print("pointins.evaluate: warning: the probe's loss is not finite; lower --lr.", file=sys.stderr)
    return losses


@torch.no_grad()
def predict(heads: ProbeHeads, scene: Scene, device="cpu", encoder: Encoder | None = None):
    """Class probabilities (V, C) and offsets (V, 3) or None at the voxels of ``scene`` (CPU tensors).
    With ``encoder`` the features are computed now (fine-tuned encoders), else ``scene.feat`` is used."""
    heads.eval()
    if encoder is not None:
        x = encoder.backbone.to(device).eval()(_to(scene.batch, device)).full
    else:
        x = scene.feat.to(device)
    logits, off = heads(x)
    return logits.float().softmax(-1).cpu(), (off.float().cpu() if off is not None else None)
