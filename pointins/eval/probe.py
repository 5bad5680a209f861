"""Frozen-feature probes (METHOD.md section 7): load a pretrained encoder, extract its un-pooled all-stage
features per scene, train a linear (or small MLP) semantic + offset head on them, or fine-tune everything.

* :func:`load_encoder` reads ``backbone.pt`` / a training checkpoint / a run folder (or builds a random
  ``"scratch"`` encoder for the baseline).
* :func:`prepare` grid-samples a labelled scene (one point per voxel, the training views' centre shift) and
  keeps the point -> voxel map, so predictions made on voxels are scored on every original point.
* :func:`extract` runs the frozen encoder (eval mode: deterministic) and keeps ``full`` features (float16).
* :class:`ProbeHeads` + :func:`train_probe` train the heads (CE, optional Lovasz-softmax, L1 + (1 - cos) on
  offsets to ground-truth instance centroids) on random point minibatches, or end to end (``kind="finetune"``).
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
    "extract",
    "load_encoder",
    "lovasz_softmax",
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

    def __len__(self) -> int:
        return len(self.coord)


def prepare(scene: dict, grid_size: float, feat_keys, seed: int = 0, name: str | None = None) -> Scene:
    """Grid-sample a labelled scene for evaluation (see the module docstring)."""
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
    # offsets to ground-truth instance centroids (original frame, from every point of the instance)
    cen = np.full((len(idx), 3), np.nan, np.float32)
    has = ins >= 0
    if has.any():
        ids, rows = np.unique(ins[has], return_inverse=True)
        sums = np.zeros((len(ids), 3))
        np.add.at(sums, rows, coord[has].astype(np.float64))
        centre = sums / np.bincount(rows, minlength=len(ids))[:, None]
        vi = ins[idx]
        ok = vi >= 0
        cen[ok] = centre[np.searchsorted(ids, vi[ok])] - coord[idx][ok]
    return Scene(name, batch, coord[idx], seg[idx], ins[idx], cen, inv, seg, ins, coord)


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
    """Semantic (+ offset) heads on encoder features. ``kind="linear"``: one Linear each (the linear probe);
    ``"decoder"``: a 2-layer MLP each. Features are standardised with fixed per-channel statistics first (an
    affine map: a linear probe stays linear)."""

    def __init__(self, in_channels: int, num_classes: int, offsets: bool = False, kind: str = "linear",
                 hidden: int = 256):  # fmt: skip
        super().__init__()
        if kind not in ("linear", "decoder"):
            raise ValueError(f"ProbeHeads: kind must be 'linear' or 'decoder', got {kind!r}.")

        def head(out):
            if kind == "linear":
                return nn.Linear(in_channels, out)
            return nn.Sequential(
                nn.Linear(in_channels, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out)
            )

        self.kind = kind
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))
        self.semantic = head(num_classes)
        self.offset = head(3) if offsets else None

    @torch.no_grad()
    def set_statistics(self, feat: torch.Tensor) -> None:
        f = feat.float()
        self.mean.copy_(f.mean(0).to(self.mean.device))
        self.std.copy_(f.std(0).clamp_min(1e-4).to(self.std.device))

    def forward(self, feat: torch.Tensor):
        x = (feat.float() - self.mean) / self.std
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
    """CE (+ Lovasz) on labels, L1 + (1 - cos) of offsets against ground-truth centroid offsets where given."""
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

            lo = offset_loss(offsets[has].float(), centroid_offset[has]).mean()
            loss = loss + lo
            parts["offset"] = float(lo.detach())
    return loss, parts


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train_probe(
    scenes: list[Scene],
    heads: ProbeHeads,
    *,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_points: int = 32768,
    lovasz: bool = False,
    encoder: Encoder | None = None,
    backbone_lr_scale: float = 0.1,
    seed: int = 0,
    device="cpu",
    progress: bool = True,
    log=None,
) -> list[float]:
    """Train ``heads`` on ``scenes``; returns the loss of every step.

    Frozen probe (``encoder=None``): scenes need :func:`extract`'s features; each step is a random minibatch of
    ``batch_points`` voxels from all scenes, ``epochs`` passes over the voxels. Fine-tuning (``encoder`` given):
    each step runs the encoder (train mode) on one scene, ``epochs`` passes over the scenes, the encoder at
    ``lr * backbone_lr_scale``. AdamW, 5% warm-up, cosine decay.
    """
    from pointins._progress import progress_bar

    if not scenes:
        raise EvalError("pointins.evaluate: no training scenes for the probe.")
    gen = torch.Generator().manual_seed(seed)
    heads.to(device).train()
    finetune = encoder is not None
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
        feat = torch.cat([s.feat for s in scenes])
        seg = torch.from_numpy(np.concatenate([s.segment for s in scenes]))
        cen = torch.from_numpy(np.concatenate([s.centroid_offset for s in scenes]))
        heads.set_statistics(feat[torch.randperm(len(feat), generator=gen)[:200_000]])
        params = [{"params": heads.parameters(), "lr": lr}]
        per_epoch = max(1, math.ceil(len(feat) / batch_points))
        total = epochs * per_epoch
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    base = [g["lr"] for g in opt.param_groups]
    warm = max(1, total // 20)
    losses: list[float] = []
    bar = progress_bar(total=total, desc="finetune" if finetune else "probe", enabled=progress)
    step = 0
    for _ep in range(epochs):
        if finetune:
            batches = torch.randperm(len(scenes), generator=gen).tolist()
        else:
            perm = torch.randperm(len(feat), generator=gen)
            batches = [perm[i : i + batch_points] for i in range(0, len(perm), batch_points)]
        for b in batches:
            f = _cosine_lr(step, total, warm)
            for g, lr0 in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr0 * f
            if finetune:
                s = scenes[b]
                x = model(_to(s.batch, device)).full
                y = torch.from_numpy(s.segment).to(device)
                c = torch.from_numpy(s.centroid_offset).to(device)
            else:
                x, y, c = feat[b].to(device), seg[b].to(device), cen[b].to(device)
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
                log({"step": step, "loss": losses[-1], **parts, "lr": opt.param_groups[0]["lr"]})
    bar.close()
    heads.eval()
    if finetune:
        encoder.backbone.eval()
    if losses and not math.isfinite(losses[-1]):
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
