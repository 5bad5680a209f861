"""``python -m pointins.train``: PointINS pretraining of a PTv3 encoder.

    python -m pointins.train                                  # cpu-demo: tiny model, synthetic rooms, < 10 min
    python -m pointins.train --preset indoor-base --data /data/scannet --out runs/scannet
    python -m pointins.train --preset outdoor-base --data /data/semantickitti
    python -m pointins.train --out runs/demo --resume         # continue from runs/demo/latest
    torchrun --nproc_per_node 8 -m pointins.train --preset indoor-base --data ...   # DDP

``key=value`` arguments override any setting (``steps=2000``, ``ssl.prototypes=4096``, see
:mod:`pointins.config`); ``--variant`` picks an ablation (``semantic-only``, ``offset``, ...).

What a run writes to ``--out``: ``config.json`` (the resolved config), ``metrics.jsonl`` + ``metrics.csv``
(and TensorBoard events when installed), ``ckpt_XXXXXXX.pt`` every ``ckpt_every`` steps with ``latest``
naming the newest (atomic: temp file + rename; model, teacher, optimiser, scheduler, RNG, step),
``vis/`` (PNG + PLY of the teacher's segments, pseudo-instances and centres every ``vis_every`` steps) and
``backbone.pt`` at the end (the student encoder for :mod:`pointins.evaluate` and fine-tuning).

Reproducibility: batches depend only on (seed, epoch, index), masks and the model's random draws on
(seed, step, rank), so ``--resume`` continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import pointins.ops as pointins_ops
from pointins import _timing
from pointins._timing import phase
from pointins.config import PRESETS, TrainConfig, apply_overrides, from_dict, resolve
from pointins.data.collate import collate
from pointins.data.views import ThreadedBatches, ViewDataset, seed_worker
from pointins.models import build_backbone
from pointins.ssl import VARIANTS, PointINS, param_groups
from pointins.ssl.teacher import cosine

__all__ = [
    "CheckpointError",
    "RunFolderBusy",
    "RunLock",
    "TrainingDiverged",
    "latest_checkpoint",
    "load_checkpoint",
    "main",
    "open_dataset",
    "run",
]

CKPT_FORMAT = "pointins-train-1"


class TrainingDiverged(RuntimeError):
    """Raised after ``max_bad_steps`` consecutive non-finite losses/gradients."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or is not a pointins training checkpoint."""


class RunFolderBusy(RuntimeError):
    """Another live process is writing to the same run folder."""


class RunLock:
    """An exclusive lock on a run folder (``OUT/.lock``) for as long as a run writes to it.

    It is an ``flock`` on the file, so the kernel releases it when the process dies: a lock left by a killed run
    is stale by construction, and the next run takes it over (it says so). The file itself is never deleted
    (deleting it would let two runs lock two different files of the same name); it records who holds it."""

    def __init__(self, folder: Path):
        self.path, self.fd = Path(folder) / ".lock", None

    def acquire(self) -> str | None:
        """Take the lock; raises :class:`RunFolderBusy` when a live run holds it. Returns a note when a stale lock
        of a run that is gone was taken over."""
        import fcntl
        import socket

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._holder(fd)
            os.close(fd)
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}" if holder
                   else "another process")  # fmt: skip
            raise RunFolderBusy(
                f"pointins.train: {self.path.parent} is in use by another run ({who}); two runs in one folder would "
                "overwrite each other's checkpoints and logs. Wait for it to finish, stop it, or pass another --out."
            ) from None
        old = self._holder(fd)
        note = None
        if old:
            note = (f"pointins.train: took over the stale lock of pid {old.get('pid')} on {old.get('host')} (started "
                    f"{old.get('started')}; that run is gone)")  # fmt: skip
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        return note

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            return json.loads(data) if data else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


# ------------------------------------------------------------------------------------------------
# distributed
# ------------------------------------------------------------------------------------------------


def _dist_setup(device_pref: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if device_pref not in ("auto", "cpu", "cuda") and not device_pref.startswith("cuda:"):
        raise ValueError(f"pointins.train: device must be auto, cpu or cuda[:N], got {device_pref!r}.")
    if device_pref.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("pointins.train: device=cuda but torch sees no GPU; use device=cpu (or auto).")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device(device_pref if device_pref.startswith("cuda:") else f"cuda:{local}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    return rank, (dist.get_world_size() if dist.is_initialized() else 1), dev


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _all_mean(values: list[float], device) -> list[float]:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    return Path(os.environ.get("POINTINS_CACHE", Path.home() / ".cache" / "pointins"))


def synthetic_root(cfg: TrainConfig) -> Path:
    return _cache_dir() / "synthetic" / f"{cfg.kind}-seed{cfg.seed}-n{cfg.synthetic_scenes}"


def _ensure_synthetic(cfg: TrainConfig, rank: int, progress: bool) -> Path:
    """Generate the built-in synthetic scenes on first use (rank 0; others wait), atomically."""
    root = synthetic_root(cfg)
    if rank == 0 and not (root / "meta.json").exists():
        from pointins.data import synthetic

        print(f"pointins.train: generating {cfg.synthetic_scenes} synthetic {cfg.kind} scenes in {root} "
              "(first use only)", file=sys.stderr)  # fmt: skip
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        try:
            # one process per data worker (cpu-demo: 0 -> 1): on 2 cores two generator processes took longer
            # than one (40 rooms: 14.9 s vs 11.0 s, 2026-12-07)
            workers = max(1, min(cfg.num_workers, os.cpu_count() or 1))
            synthetic.generate(
                cfg.kind,
                tmp,
                cfg.synthetic_scenes,
                seed=cfg.seed,
                val_fraction=0.125,
                workers=workers,
                progress=progress,
            )
            try:
                tmp.rename(root)
            except OSError:  # another process made it meanwhile
                if not (root / "meta.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    return root


def open_dataset(cfg: TrainConfig, rank: int = 0, progress: bool = True):
    """The scene dataset of a run: ``cfg.data`` (split ``cfg.split`` when it has one) or the synthetic scenes."""
    from pointins.data import DataError, PointCloudDataset

    root = Path(cfg.data).expanduser() if cfg.data else _ensure_synthetic(cfg, rank, progress)
    if not root.exists():
        raise FileNotFoundError(f"pointins.train: --data {root} does not exist.")
    kw = {"on_error": "skip", "nan": cfg.data_nan, "min_points": cfg.min_scene_points}
    if cfg.split:
        try:
            return PointCloudDataset(root, split=cfg.split, **kw)
        except DataError:
            pass
    return PointCloudDataset(root, **kw)


def feature_keys(scene: dict) -> tuple[str, ...]:
    """Backbone inputs available in a scene: xyz + rgb (+ normal) indoors, xyz + strength for LiDAR."""
    if "color" in scene:
        return ("coord", "color", "normal") if "normal" in scene else ("coord", "color")
    if "strength" in scene:
        return ("coord", "strength")
    return ("coord",)


def _channels(keys) -> int:
    return sum({"coord": 3, "color": 3, "normal": 3, "strength": 1}[k] for k in keys)


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` for every step from a start step on: epoch e's order is a permutation drawn
    from ``seed + e``, split over ranks; resuming at any step gives the same batches."""

    def __init__(self, n: int, batch: int, seed: int, rank: int, world: int, start_step: int, total_steps: int):
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.per_rank = n // world
        self.steps_per_epoch = self.per_rank // batch
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"pointins.train: {n} scenes cannot fill one batch of {batch} on each of {world} processes; "
                "use a smaller batch_size or more data (synthetic_scenes=...)."
            )
        self.start, self.total = start_step, total_steps

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)[: self.per_rank * self.world]
        return perm[self.rank :: self.world].tolist()

    def __iter__(self):
        step = self.start
        while step < self.total:
            epoch, pos = divmod(step, self.steps_per_epoch)
            order = self._order(epoch)
            for s in range(pos, self.steps_per_epoch):
                if step >= self.total:
                    return
                yield from ((epoch, i) for i in order[s * self.batch : (s + 1) * self.batch])
                step += 1

    def __len__(self) -> int:
        return (self.total - self.start) * self.batch


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


# ------------------------------------------------------------------------------------------------
# checkpoints and logs
# ------------------------------------------------------------------------------------------------


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 -- third-party code draws from it
    st = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate()),
          "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}  # fmt: skip
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    r = json.loads(st["python"])
    random.setstate((r[0], tuple(r[1]), r[2]))
    name, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def latest_checkpoint(folder: str | os.PathLike) -> Path:
    """The checkpoint a run folder's ``latest`` file names. The name must be a plain file name inside the folder
    (no path, no ``..``): a ``latest`` that points elsewhere is refused, never followed."""
    folder = Path(folder)
    latest = folder / "latest"
    try:
        from pointins.data.readers._safeio import open_regular

        with open_regular(latest) as f:
            text = f.read(4097)
    except Exception as e:
        raise CheckpointError(f"pointins: cannot read {latest} ({getattr(e, 'problem', e)}).") from None
    name = text.decode("utf-8", "replace").strip()
    if len(text) > 4096 or not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise CheckpointError(f"pointins: {latest} must name a checkpoint file inside {folder} (e.g. ckpt_0000100.pt), "
                              f"got {name[:80]!r}; it is corrupt or was tampered with.")  # fmt: skip
    path = folder / name
    try:
        inside = path.resolve().parent == folder.resolve()
    except OSError:
        inside = False
    if not inside:
        raise CheckpointError(
            f"pointins: {latest} names {name!r}, which resolves outside {folder}; refusing to follow it."
        )
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a training checkpoint (``weights_only=True``) with a clear error for corrupt or foreign files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"pointins.train: nothing to resume: {path} does not exist (no 'latest' checkpoint); run without --resume."
        )
    if path.is_dir():
        if not (path / "latest").exists():
            raise FileNotFoundError(f"pointins.train: {path} has no 'latest' checkpoint to resume from.")
        path = latest_checkpoint(path)
    from pointins._torchio import CheckpointReadError, torch_load

    try:
        ck = torch_load(path, map_location=map_location)
    except CheckpointReadError as e:
        raise CheckpointError(
            f"pointins.train: {e}; it is corrupt, tampered with or not a pointins checkpoint. Resume from an older "
            "ckpt_*.pt in the same folder."
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"pointins.train: {path} is not a pointins training checkpoint ({CKPT_FORMAT}).")
    want = {"step": int, "config": dict, "student": dict, "teacher": dict, "optimizer": dict, "scheduler": dict,
            "rng": dict}  # fmt: skip
    for key, typ in want.items():
        if not isinstance(ck.get(key), typ) or isinstance(ck.get(key), bool):
            raise CheckpointError(f"pointins.train: {path} is damaged: its {key!r} entry is missing or not a "
                                  f"{typ.__name__}. Resume from an older ckpt_*.pt in the same folder.")  # fmt: skip
    for key in ("student", "teacher"):
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ck[key].items()):
            raise CheckpointError(f"pointins.train: {path} is damaged: {key!r} is not a state dict of tensors.")
    if ck["step"] < 0:
        raise CheckpointError(f"pointins.train: {path} is damaged: negative step {ck['step']}.")
    ck["path"] = str(path)
    return ck


class MetricLog:
    """metrics.jsonl (every key) + metrics.csv (fixed columns) + TensorBoard when available."""

    COLUMNS = ("step", "epoch", "loss", "loss_sem", "loss_off", "lr", "weight_decay", "momentum", "teacher_temp",
               "mask_ratio", "pairs", "pseudo_instances", "offset_norm", "points_per_s", "step_s",
               "dropped_points", "repaired_points", "diag_teacher_cos", "diag_teacher_l1", "diag_raw_cos",
               "diag_raw_l1",
               "diag_student_cos", "diag_student_l1", "diag_scr_recall", "diag_scr_kept", "diag_scr_per_view",
               "diag_true_per_view", "diag_scr_k", "diag_grad_sem", "diag_grad_off")  # fmt: skip

    def __init__(self, out: Path, start_step: int, tensorboard: bool):
        self.jsonl, self.csv = out / "metrics.jsonl", out / "metrics.csv"
        self._truncate(start_step)
        new_csv = not self.csv.exists()
        self.fj = open(self.jsonl, "a")
        self.fc = open(self.csv, "a", newline="")
        self.writer = csv.writer(self.fc)
        if new_csv:
            self.writer.writerow(self.COLUMNS)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step)
            except Exception:  # tensorboard not installed
                self.tb = None

    def _truncate(self, start_step: int) -> None:
        """Drop records after ``start_step`` (written after the checkpoint we resume from; a record's step counts
        the steps done)."""
        if self.jsonl.exists():
            lines = self.jsonl.read_text().splitlines()
            keep = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= start_step]
            _atomic_text(self.jsonl, "".join(ln + "\n" for ln in keep))
        if self.csv.exists():
            rows = list(csv.reader(self.csv.read_text().splitlines()))
            keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= start_step]
            _atomic_text(self.csv, "".join(",".join(r) + "\n" for r in keep))

    def write(self, rec: dict) -> None:
        self.fj.write(json.dumps(rec) + "\n")
        self.fj.flush()
        self.writer.writerow([rec.get(c, "") for c in self.COLUMNS])
        self.fc.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if k not in ("step", "epoch") and isinstance(v, int | float):
                    self.tb.add_scalar(f"train/{k}", v, rec["step"])

    def close(self) -> None:
        self.fj.close()
        self.fc.close()
        if self.tb is not None:
            self.tb.close()


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------


class OneCycle:
    """lr factor of a one-cycle schedule: linear warm-up from ``1/div`` to 1 over ``warmup`` of the steps, then
    cosine down to ``1/(div * final_div)`` (Pointcept's OneCycleLR shape; any number of steps works)."""

    def __init__(self, steps: int, warmup: float, div: float, final_div: float):
        self.steps, self.warm = steps, max(1, math.ceil(warmup * steps)) if warmup > 0 else 0
        self.lo, self.end = 1.0 / div, 1.0 / (div * final_div)

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return self.lo + (1.0 - self.lo) * step / self.warm
        p = (step - self.warm) / max(1, self.steps - self.warm)
        return cosine(1.0, self.end, p)


def _worker_nice(cfg: TrainConfig, device: torch.device) -> int:
    """Niceness of the data workers: ``cfg.worker_nice``, or by default 19 on a CPU run (the step's own threads
    use every core; workers at normal priority preempt them mid-kernel and the whole thread team waits, which
    cost more than the views themselves) and 0 with a GPU."""
    if cfg.worker_nice is not None:
        return int(cfg.worker_nice)
    return 19 if device.type == "cpu" else 0


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


def run(cfg: TrainConfig, resume: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Pretrain as configured; returns a summary (final metrics, paths). ``resume``: a checkpoint or run
    folder (its ``latest``)."""
    rank, world, device = _dist_setup(cfg.device)
    out = Path(cfg.out)
    lock = None
    if rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FileNotFoundError(f"pointins.train: cannot create the run folder {out} ({e.strerror or e}); "
                                    "pass a writable --out.") from None  # fmt: skip
        if not out.is_dir():
            raise FileNotFoundError(f"pointins.train: --out {out} exists and is not a folder; pass another --out.")
        lock = RunLock(out)
        note = lock.acquire()
        if note:
            print(note, file=sys.stderr)
    try:
        return _run(cfg, resume, progress, rank, world, device, out)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: TrainConfig, resume, progress: bool, rank: int, world: int, device, out: Path) -> dict:
    ck = None
    if resume is not None:
        ck = load_checkpoint(resume)
        try:
            saved = from_dict(ck["config"])
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"pointins.train: the config stored in {ck['path']} is invalid ({e}).") from None
        if asdict(saved) != asdict(cfg):  # resuming with a different config: keep the checkpoint's
            diff = [k for k, v in asdict(saved).items() if asdict(cfg)[k] != v and k not in ("out", "steps")]
            if diff:
                warnings.warn(f"pointins.train: resuming with the checkpoint's config; ignoring changes to {diff}.",
                              stacklevel=2)  # fmt: skip
            saved.out, saved.steps = cfg.out, cfg.steps
            cfg = saved
    if rank == 0:
        _atomic_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(_step_seed(cfg.seed, 0, rank))

    scenes = open_dataset(cfg, rank, progress and rank == 0)
    first = scenes[0]
    keys = feature_keys(first)
    in_ch = _channels(keys)
    views = ViewDataset(scenes, cfg.views, seed=cfg.seed, cache_mb=cfg.scene_cache_mb)

    over = {"grid_size": cfg.views.grid_size}
    if cfg.drop_path is not None:
        over["drop_path"] = cfg.drop_path
    backbone = build_backbone(cfg.backbone, in_channels=in_ch, **over)
    if cfg.init and ck is None:
        _init_backbone(backbone, cfg, keys, rank)
    model = PointINS(backbone, cfg.ssl).to(device)  # the teacher starts as a copy of the (initialised) student
    model.total_steps = cfg.steps  # the EMA rule (ssl.ema_ref_steps) scales with the run length
    total_batch = cfg.batch_size * world
    peak = cfg.lr * total_batch / cfg.lr_batch
    groups = param_groups(model.student, backbone.config.depths, peak, cfg.weight_decay[0], cfg.layer_decay)
    # default betas (0.9, 0.999), as Sonata's AdamW; fused: one kernel per parameter group (torch picks a
    # per-parameter loop of separate ops on the CPU otherwise, five times slower here)
    opt = torch.optim.AdamW(groups, lr=peak, fused=True)
    cycle = OneCycle(cfg.steps, cfg.warmup, cfg.div_factor, cfg.final_div_factor)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cycle)
    start = 0
    bad = 0
    if ck is not None:
        try:
            model.student.load_state_dict(ck["student"])
            model.teacher.load_state_dict(ck["teacher"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            _set_rng_state(ck["rng"])
            start, bad = int(ck["step"]), int(ck.get("bad_steps", 0))
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise CheckpointError(f"pointins.train: cannot restore {ck['path']} ({type(e).__name__}: "
                                  f"{str(e)[:300]}); it does not match this model or is damaged."
                                  ) from None  # fmt: skip
        if rank == 0:
            print(f"pointins.train: resumed from {ck['path']} at step {start}", file=sys.stderr)
    student = model.student
    if world > 1:
        student = torch.nn.parallel.DistributedDataParallel(
            model.student, device_ids=[device.index] if device.type == "cuda" else None
        )
    use_amp = device.type == "cuda" and cfg.amp in ("auto", "bf16")
    student_params = list(model.student.parameters())  # walked every step (gradient clipping)
    overlap = cfg.overlap_teacher and device.type == "cpu" and torch.get_num_threads() > 1

    sampler = EpochSampler(len(views), cfg.batch_size, cfg.seed, rank, world, start, cfg.steps)
    collate_fn = functools.partial(collate, feat_keys=keys)
    if cfg.num_workers == 0:  # views made in this process between steps, the samples of a batch on view_threads
        loader = ThreadedBatches(views, sampler, cfg.batch_size, collate_fn, threads=cfg.view_threads)
    else:
        loader = torch.utils.data.DataLoader(
            views, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate_fn,
            worker_init_fn=functools.partial(seed_worker, nice=_worker_nice(cfg, device)),
            pin_memory=device.type == "cuda",
        )  # fmt: skip
    log = MetricLog(out, start, cfg.tensorboard) if rank == 0 else None
    from pointins._progress import progress_bar

    bar = progress_bar(total=cfg.steps, desc="pretrain", enabled=progress and rank == 0, initial=start)
    model.train()
    last: dict = {}
    dropped = int(ck.get("dropped_points", 0)) if ck is not None else 0
    repaired = int(ck.get("repaired_points", 0)) if ck is not None else 0
    t_last = time.perf_counter()
    step = start
    pending = False
    try:
        batches = iter(loader)
        while True:
            with phase("data wait"):
                batch = next(batches, None)
            if batch is None:
                break
            _timing.merge(batch.pop("_timing", None))
            progress_frac = step / cfg.steps
            batch = _to(batch, device)
            points = float(sum(batch[k]["coord"].shape[0] for k in ("global", "local") if k in batch))
            step_dropped = float(batch.get("dropped_points", 0))  # non-finite points the readers dropped
            step_repaired = float(batch.get("repaired_points", 0))  # points whose NaN/Inf attributes were set to 0
            torch.manual_seed(_step_seed(cfg.seed, step, rank))
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed + 1, step, rank))
            wd = cosine(cfg.weight_decay[0], cfg.weight_decay[1], progress_frac)
            for g in opt.param_groups:
                g["weight_decay"] = wd if g["apply_wd"] else 0.0
            want_vis = rank == 0 and cfg.vis_every > 0 and (step + 1) % cfg.vis_every == 0
            # On a GPU, the ops' value checks are queued on the device and read once per step (one host sync instead
            # of one per op); a failed check raises here, before the step's results are used.
            with (pointins_ops.deferred_checks(device) if device.type == "cuda" else contextlib.nullcontext(),
                  phase("forward + losses")):  # fmt: skip
                diagnose = rank == 0 and cfg.diagnostics and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps)
                res = model.step_losses(batch, progress_frac, step=step, student=student, generator=gen,
                                        autocast=use_amp, details=want_vis, diagnose=diagnose,
                                        overlap=overlap)  # fmt: skip
            ok = bool(torch.isfinite(res.loss.detach()))
            ok = _all_mean([float(ok)], device)[0] == 1.0
            gnorm = float("nan")
            if ok:
                with phase("backward"):
                    res.loss.backward()
                with phase("clip grad"):
                    gnorm = float(torch.nn.utils.clip_grad_norm_(student_params, cfg.clip_grad, foreach=True))
                ok = math.isfinite(gnorm)
            if ok:
                with phase("optimizer"):
                    opt.step()
                with phase("ema"):
                    model.update_teacher(model.schedule(progress_frac)["momentum"])
                bad = 0
            else:
                bad += 1
                if rank == 0:
                    warnings.warn(f"pointins.train: step {step}: non-finite loss/gradient ({res.stats}); step skipped "
                                  f"({bad}/{cfg.max_bad_steps} in a row).", stacklevel=2)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            sched.step()
            if bad >= cfg.max_bad_steps:
                raise TrainingDiverged(
                    f"pointins.train: {bad} consecutive steps had a non-finite loss or gradient (last at step {step}); "
                    f"stopped. The last good checkpoint is in {out} (latest); lower lr or clip_grad and --resume."
                )
            step += 1
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            stats = dict(res.stats)
            loss_val = float(res.loss.detach()) if ok else float("nan")
            vals = _all_mean([loss_val, stats["loss_sem"], stats["loss_off"], points * world / dt, step_dropped,
                              step_repaired], device)  # fmt: skip
            dropped += round(vals[4] * world)  # all ranks' scans
            repaired += round(vals[5] * world)
            rec = {"step": step, "epoch": (step - 1) // sampler.steps_per_epoch, "loss": vals[0],
                   "loss_sem": vals[1], "loss_off": vals[2], "lr": opt.param_groups[-1]["lr"], "weight_decay": wd,
                   "grad_norm": gnorm, "points_per_s": vals[3], "step_s": dt, "skipped": not ok,
                   "dropped_points": dropped, "repaired_points": repaired}  # fmt: skip
            rec.update({k: v for k, v in stats.items() if k not in rec})
            last = rec
            if rank == 0:
                if step % cfg.log_every == 0 or step == cfg.steps:
                    log.write(rec)
                bar.update(1)
                bar.set_postfix(loss=f"{vals[0]:.3f}", sem=f"{vals[1]:.3f}", off=f"{vals[2]:.3f}",
                                pts_s=f"{vals[3]:.0f}")  # fmt: skip
                if want_vis and res.details is not None:
                    from pointins.ssl.visualize import teacher_look

                    model.eval()
                    teacher_look(model, res.details, batch, out / "vis" / f"step_{step:07d}")
                    model.train()
            if cfg.ckpt_every and (step % cfg.ckpt_every == 0 or step == cfg.steps):
                pending = True
            if pending and bad == 0:  # never checkpoint in the middle of a run of skipped steps
                with phase("checkpoint"):
                    _save(cfg, model, opt, sched, step, bad, out, rank, keys, in_ch, dropped, repaired)
                    if rank == 0 and cfg.diagnostics:
                        _plot_diagnostics(out)
                pending = False
            _timing.end_step()
    finally:
        bar.close()
        if log is not None:
            log.close()
            if cfg.diagnostics:
                _plot_diagnostics(out)
    if rank == 0:
        _atomic_save({"format": "pointins-backbone-1", "backbone": model.student.backbone.state_dict(),
                      "backbone_config": asdict(backbone.config), "feat_keys": list(keys), "in_channels": in_ch,
                      "heads": {"offset": model.student.offset.state_dict()} if model.student.offset is not None
                      else {}, "config": cfg.to_dict(), "step": step}, out / "backbone.pt")  # fmt: skip
    _barrier()
    return {"out": str(out), "step": step, "last": last, "world": world, "device": str(device)}


def _plot_diagnostics(out: Path) -> None:
    """diagnostics.svg from metrics.jsonl (a plotting failure never stops training)."""
    from pointins.ssl.diagnostics import plot_diagnostics

    try:
        plot_diagnostics(out)
    except (OSError, ValueError, KeyError) as e:
        warnings.warn(f"pointins.train: could not draw diagnostics.svg ({e}).", stacklevel=2)


def _init_backbone(backbone, cfg: TrainConfig, keys, rank: int) -> None:
    """Load ``cfg.init`` (a Pointcept / Sonata checkpoint, or a pointins backbone.pt / ckpt / run folder) into
    the student's encoder before the teacher is copied from it. Every encoder weight must be found with the
    right shape; the error says which setting to change when not."""
    from pointins._torchio import CheckpointReadError, torch_load
    from pointins.models import PRESETS as BACKBONES
    from pointins.models import load_pointcept_state_dict

    path = Path(cfg.init).expanduser()
    if path.is_dir():
        path = path / "backbone.pt" if (path / "backbone.pt").exists() else latest_checkpoint(path)
    if not path.exists():
        raise FileNotFoundError(f"pointins.train: init={cfg.init}: no such checkpoint.")
    try:
        obj = torch_load(path)
    except CheckpointReadError as e:
        raise CheckpointError(f"pointins.train: init: {e}") from None
    if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT and isinstance(obj.get("student"), dict):
        obj = {k: v for k, v in obj["student"].items() if k.startswith("backbone.")}  # a pointins training checkpoint
    state = obj
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"pointins.train: init={path} holds no state dict.")
    stem = next((v for k, v in state.items() if k.endswith("embedding.stem.linear.weight")), None)
    if stem is None or not isinstance(stem, torch.Tensor) or stem.dim() != 2:
        raise CheckpointError(f"pointins.train: init={path} has no PTv3 encoder (no embedding.stem.linear.weight).")
    want_in = _channels(keys)
    if stem.shape[1] != want_in:
        raise CheckpointError(
            f"pointins.train: init={path}: its encoder takes {stem.shape[1]} input channels (Sonata: 9 = coord, "
            f"color / 255, normal), but this data gives {want_in} ({', '.join(keys)}). Use data with the same "
            "inputs (e.g. add normals) or pretrain from scratch."
        )
    widths = sorted({v.shape[0] for k, v in state.items() if k.endswith("down.proj.weight")} | {stem.shape[0]})
    fits = [n for n, p in BACKBONES.items() if sorted(set(p["channels"])) == widths]
    try:
        missing, unexpected = load_pointcept_state_dict(backbone, state)
    except ValueError as e:
        hint = f" The checkpoint's widths match backbone={fits[0]}." if fits else ""
        raise CheckpointError(f"pointins.train: init={path}: {e}{hint}") from None
    if missing:
        hint = f" Its widths match backbone={fits[0]}." if fits and fits[0] != cfg.backbone else ""
        raise CheckpointError(f"pointins.train: init={path} lacks {len(missing)} encoder weights of backbone="
                              f"{cfg.backbone} (e.g. {missing[:3]}).{hint}")  # fmt: skip
    if rank == 0:
        print(f"pointins.train: initialised student and teacher encoders from {path} ({len(unexpected)} other "
              "entries, e.g. heads or a decoder, ignored)", file=sys.stderr)  # fmt: skip


def _save(
    cfg, model, opt, sched, step, bad, out: Path, rank: int, keys, in_ch, dropped: int = 0, repaired: int = 0
) -> None:
    if rank == 0:
        name = f"ckpt_{step:07d}.pt"
        state = {
            "format": CKPT_FORMAT, "step": step, "bad_steps": bad, "config": cfg.to_dict(), "dropped_points": dropped,
            "repaired_points": repaired,
            "student": model.student.state_dict(), "teacher": model.teacher.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(),
            "backbone_config": asdict(model.student.backbone.config), "feat_keys": list(keys), "in_channels": in_ch,
        }  # fmt: skip
        _atomic_save(state, out / name)
        _atomic_text(out / "latest", name + "\n")
        if cfg.keep_checkpoints > 0:
            for old in sorted(out.glob("ckpt_*.pt"))[: -cfg.keep_checkpoints]:
                old.unlink(missing_ok=True)
    _barrier()


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pointins.train",
        description="PointINS self-supervised pretraining of a PTv3 encoder. Extra key=value arguments override "
        "settings (e.g. steps=2000 batch_size=4 ssl.prototypes=4096 views.grid_size=0.05).",
    )
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="cpu-demo (default without a GPU), indoor-base / outdoor-base (GPU; indoor-base is the "
                   "default with one)")  # fmt: skip
    p.add_argument("--data", default=None, help="dataset root the readers accept (default: built-in synthetic scenes)")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    p.add_argument("--steps", type=int, default=None, help="total training steps")
    p.add_argument("--variant", default=None, choices=list(VARIANTS), help="method variant / ablation")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="resume from a checkpoint file, or (no value) from OUT/latest")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume not in (None, "auto") and "=" in args.resume and not Path(args.resume).exists():
        # argparse hands the first key=value after a bare --resume to --resume: it is an override
        args.overrides.insert(0, args.resume)
        args.resume = "auto"
    preset = args.preset or ("indoor-base" if torch.cuda.is_available() else "cpu-demo")
    try:
        cfg = resolve(preset, args.overrides, variant=args.variant)
        extra = []
        if args.out or not any(o.startswith("out=") for o in args.overrides):
            extra.append(f"out={args.out or 'runs/' + preset}")
        if args.data:
            extra.append(f"data={args.data}")
        if args.steps:
            extra.append(f"steps={args.steps}")
        cfg = apply_overrides(cfg, extra)
    except (KeyError, ValueError, TypeError) as e:
        print(f"pointins.train: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    resume = None
    if args.resume:
        resume = Path(cfg.out) if args.resume == "auto" else Path(args.resume)
    t0 = time.perf_counter()
    from pointins.data import DataError

    try:
        summary = run(cfg, resume=resume, progress=not args.no_progress)
    except (FileNotFoundError, CheckpointError, DataError, TrainingDiverged, RunFolderBusy) as e:
        print(f"{e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        last = summary["last"]
        msg = (f"pointins.train: {summary['step']} steps in {time.perf_counter() - t0:.0f} s on {summary['device']}"
               f" x{summary['world']}; ")  # fmt: skip
        if last:
            msg += (f"last loss {last['loss']:.4f} (semantic {last['loss_sem']:.4f}, offset {last['loss_off']:.4f}), "
                    f"{last['points_per_s']:.0f} points/s; ")  # fmt: skip
            if last.get("dropped_points"):
                msg += f"{last['dropped_points']} points with NaN/Inf coordinates dropped by the readers; "
            if last.get("repaired_points"):
                msg += f"{last['repaired_points']} points with NaN/Inf normals/colours/intensities set to 0; "
        print(msg + f"outputs in {summary['out']}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
