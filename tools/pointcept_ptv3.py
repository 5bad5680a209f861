"""Pointcept's own PT-v3m2 model file, unmodified, on PointINS kernels; nothing of Pointcept is committed.

    python tools/pointcept_ptv3.py                       # Pointcept from ../.mirror/Pointcept+Pointcept/repo
    python tools/pointcept_ptv3.py --repo DIR --points 40000 --json runs/pointcept_ptv3.json

``pointcept/`` is copied out of the checkout (``git archive``; a plain folder works too) into a temporary folder
and imported file by file, skipping the package ``__init__``s (they import every model and its dependencies);
``pointcept.engines.hooks`` gets ``HookBase`` from its own ``default.py``. Three fresh processes, one thread each
(spconv 2.3.8's CPU rulebook races with more):

1. ``peer`` (when spconv and torch_scatter are installed): PT-v3m2 on spconv + torch_scatter; writes its
   weights, the input batch and the encoder output.
2. ``compat``: the same file after :func:`pointins.compat.install`, with spconv, torch_scatter and flash_attn
   blocked from importing (an attempt fails the run): loads the peer's weights (or makes its own when there is no
   peer run), compares the output with the peer's, then takes AdamW training steps on the CPU.
3. ``native``: PointINS's own encoder (:mod:`pointins.models.ptv3`) with the same weights through
   :func:`pointins.models.load_pointcept_state_dict`; output compared voxel by voxel (matched on batch and grid
   coordinate, since the two number coarse voxels differently).

Forward times (median of ``--repeat``) are printed for each. The model is the ``tiny`` preset's shape
(``--preset``), ``drop_path=0`` and ``shuffle_orders=False`` so that the runs are comparable (also on the built
``GridPooling`` modules, which PT-v3m2 constructs with their own default ``shuffle_orders=True`` and which shuffle
the curve list at every pooled level even in eval mode), flash attention off.
Pointcept's ``timm`` dependency is used when importable; otherwise a stochastic-depth ``DropPath`` of our own
stands in (identity at ``drop_path=0``). ``addict`` is required (``pip install addict``). Exit status 0 when
every comparison that ran agreed (max abs diff <= ``--tol``) and the training steps lowered the loss.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import pointcept_src  # noqa: E402

M2 = "pointcept/models/point_transformer_v3/point_transformer_v3m2_sonata.py"
BLOCKED = ("spconv", "torch_scatter", "flash_attn", "cumm")


# --------------------------------------------------------------------------------------------- child side


class _Block(importlib.abc.MetaPathFinder):
    """Refuses the real peers: in the compat run every spconv / torch_scatter import must hit the stand-ins."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"pointcept_ptv3: {name} was imported for real in the compat run")
        return None


def _load_pointcept(src: Path):
    """PT-v3m2's module from the copied tree (package __init__ files skipped: pointcept_src.load_model)."""
    return pointcept_src.load_model(src, M2)


def _config(preset: str) -> dict:
    from pointins.models.ptv3 import PRESETS, PTv3Config

    c = PTv3Config(**{**PRESETS[preset], "drop_path": 0.0})
    n = len(c.depths)
    return dict(in_channels=9, order=tuple(c.orders), stride=(2,) * (n - 1), enc_depths=c.depths,
                enc_channels=c.channels, enc_num_head=c.num_heads, enc_patch_size=c.patch_size,
                mlp_ratio=c.mlp_ratio, drop_path=0.0, shuffle_orders=False, enable_flash=False,
                enc_mode=True)  # fmt: skip


def _batch(points: int, seed: int = 0) -> dict:
    """Two synthetic rooms, grid-sampled at 2 cm (Pointcept's GridSample semantics), features coord|colour|normal."""
    import numpy as np
    import torch

    from pointins.compat.pointcept import GridSample
    from pointins.data.synthetic import indoor_scene

    parts = []
    for i in range(2):
        s = indoor_scene(seed, i)
        keep = np.random.default_rng(seed + i).permutation(len(s["coord"]))[: points // 2]
        s = {k: s[k][keep] for k in ("coord", "color", "normal")}
        parts.append(GridSample(grid_size=0.02, mode="train", return_grid_coord=True, seed=seed + i)(s))
    coord = torch.from_numpy(np.concatenate([p["coord"] for p in parts])).float()
    color = torch.from_numpy(np.concatenate([p["color"] for p in parts])).float() / 255.0
    normal = torch.from_numpy(np.concatenate([p["normal"] for p in parts])).float()
    grid = torch.from_numpy(np.concatenate([p["grid_coord"] for p in parts])).long()
    offset = torch.tensor(np.cumsum([len(p["coord"]) for p in parts]))
    return {"coord": coord, "grid_coord": grid, "feat": torch.cat([coord, color, normal], 1), "offset": offset,
            "grid_size": 0.02}  # fmt: skip


def _timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, sorted(times)[len(times) // 2]


def _child(a) -> int:
    import torch

    torch.set_num_threads(1)
    work = Path(a.work)
    res: dict = {"mode": a.mode}
    if a.mode == "compat":
        import pointins.compat

        served = pointins.compat.install(peers=("spconv", "torch_scatter"))
        sys.meta_path.insert(0, _Block())
        res["served"] = served
    if a.mode in ("peer", "compat"):
        m2 = _load_pointcept(work / "src")
        if a.mode == "compat":
            assert getattr(m2.spconv, "__name__", "") == "pointins.compat.spconv", m2.spconv
            assert m2.torch_scatter.__name__ == "pointins.compat.torch_scatter", m2.torch_scatter
            assert m2.flash_attn is None
        torch.manual_seed(0)
        model = m2.PointTransformerV3(**_config(a.preset))
        for m in model.modules():  # PT-v3m2 builds GridPooling with its default shuffle_orders=True whatever the
            if isinstance(m, m2.GridPooling):  # model's setting, and shuffles in eval mode too: switched off on
                m.shuffle_orders = False  # the built modules (an attribute, not a code change) to compare runs
        have_peer = (work / "peer.pt").exists()
        if have_peer:
            saved = torch.load(work / "peer.pt", weights_only=True)
            model.load_state_dict(saved["state_dict"], strict=True)
            batch = saved["batch"]
        else:
            batch = _batch(a.points)
        model.train()  # spconv's CPU build refuses a biased conv in eval mode; drop_path = 0: no randomness

        def fwd():
            with torch.no_grad():
                p = model({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()})
            return p.feat, p.batch, p.grid_coord

        (feat, pbatch, pgrid), res["forward_s"] = _timed(fwd, a.repeat)
        res["points"] = int(batch["coord"].shape[0])
        out = {"feat": feat, "out_batch": pbatch, "grid_coord": pgrid}
        if a.mode == "peer":
            torch.save({"state_dict": model.state_dict(), "batch": batch, **out}, work / "peer.pt")
        else:
            torch.save({"state_dict": model.state_dict(), "batch": batch, **out}, work / "compat.pt")
            if have_peer:
                ref = torch.load(work / "peer.pt", weights_only=True)
                same = torch.equal(ref["grid_coord"], pgrid) and torch.equal(ref["out_batch"], pbatch)
                res["same_voxels"] = bool(same)
                res["max_abs_diff_vs_peer"] = float((ref["feat"] - feat).abs().max())
                res["output_scale"] = float(ref["feat"].abs().max())
            # a training step on the CPU (spconv's CPU build has no backward)
            # a task the features can learn: the height quartile of each output voxel (coarsest level, enc_mode)
            head = torch.nn.Linear(feat.shape[1], 4)
            opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=2e-4)
            z = pgrid[:, 2].float()
            target = torch.bucketize(z, torch.quantile(z, torch.tensor([0.25, 0.5, 0.75])))
            losses = []
            for _ in range(a.steps):
                p = model({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()})
                loss = torch.nn.functional.cross_entropy(head(p.feat), target)
                opt.zero_grad()
                loss.backward()
                grads = [q.grad for q in model.parameters() if q.requires_grad]
                res.setdefault("grads_finite", True)
                res["grads_finite"] &= all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
                opt.step()
                losses.append(float(loss.detach()))
            res["train_losses"] = losses
    else:  # native
        from pointins.models import build_backbone, load_pointcept_state_dict

        saved = torch.load(work / "compat.pt", weights_only=True)
        model = build_backbone(a.preset, in_channels=9, drop_path=0.0, shuffle_orders=False)
        load_pointcept_state_dict(model, saved["state_dict"], strict=True)
        model.eval()
        batch = saved["batch"]

        def fwd():
            with torch.no_grad():
                return model(dict(batch), return_upcast=False, return_full=False)

        out, res["forward_s"] = _timed(fwd, a.repeat)
        last = out.levels[-1]
        ours = out.stage_feats[-1]
        nb = last.offsets.numel() - 1
        b = torch.repeat_interleave(torch.arange(nb), last.offsets.diff())

        def key(bb, g):
            return ((bb.long() * 2**20 + g[:, 0].long()) * 2**20 + g[:, 1].long()) * 2**20 + g[:, 2].long()

        k_ours, k_ref = key(b, last.grid_coord), key(saved["out_batch"], saved["grid_coord"])
        res["same_voxels"] = bool(torch.equal(torch.sort(k_ours).values, torch.sort(k_ref).values))
        if res["same_voxels"]:
            o, r = torch.argsort(k_ours), torch.argsort(k_ref)
            res["max_abs_diff_vs_pointcept_file"] = float((ours[o] - saved["feat"][r]).abs().max())
            res["output_scale"] = float(saved["feat"].abs().max())
        res["points"] = int(batch["coord"].shape[0])
    (work / f"{a.mode}.json").write_text(json.dumps(res))
    return 0


# --------------------------------------------------------------------------------------------- parent side


def _peers_installed() -> bool:
    return all(importlib.util.find_spec(n) is not None for n in ("spconv", "torch_scatter"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/pointcept_ptv3.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=None, help="a Pointcept checkout (default ../.mirror/...)")
    p.add_argument("--points", type=int, default=40_000, help="points before grid sampling, two rooms (40000)")
    p.add_argument("--preset", default="tiny", help="encoder shape: tiny / small / base (tiny)")
    p.add_argument("--repeat", type=int, default=3, help="forward timings per engine (median; 3)")
    p.add_argument("--steps", type=int, default=5, help="training steps in the compat run (5)")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--no-peer", action="store_true", help="skip the spconv + torch_scatter run")
    p.add_argument("--mode", choices=("peer", "compat", "native"), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.mode:
        return _child(a)
    repo = a.repo or ROOT.parent / ".mirror" / "Pointcept+Pointcept" / "repo"
    if not repo.exists():
        print(f"no Pointcept checkout at {repo}: fetch it (search tool: fetch github:Pointcept/Pointcept) or pass "
              "--repo", file=sys.stderr)  # fmt: skip
        return 2
    if importlib.util.find_spec("addict") is None:
        print("Pointcept's structure.py needs addict: pip install addict", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="pointcept-ptv3-") as tmp:
        work = Path(tmp)
        commit = pointcept_src.extract(repo, work / "src")
        modes = (["peer"] if _peers_installed() and not a.no_peer else []) + ["compat", "native"]
        for mode in modes:
            cmd = [sys.executable, __file__, "--mode", mode, "--work", str(work), "--points", str(a.points),
                   "--preset", a.preset, "--repeat", str(a.repeat), "--steps", str(a.steps)]  # fmt: skip
            r = subprocess.run(cmd, cwd=ROOT, check=False)
            if r.returncode:
                print(f"pointcept_ptv3: the {mode} run failed (exit {r.returncode})", file=sys.stderr)
                return 1
            results[mode] = json.loads((work / f"{mode}.json").read_text())
    results["pointcept_commit"] = commit
    ok = True
    print(f"Pointcept {commit[:12]} PT-v3m2 ({a.preset} shape), {results['compat']['points']} voxels, 1 thread")
    if "peer" in results:
        c = results["compat"]
        good = c["same_voxels"] and c["max_abs_diff_vs_peer"] <= a.tol
        ok &= good
        print(f"  spconv + torch_scatter forward {results['peer']['forward_s']:.3f} s")
        print(f"  pointins.compat        forward {c['forward_s']:.3f} s; same voxels {c['same_voxels']}, max |diff| "
              f"{c['max_abs_diff_vs_peer']:.2e} (outputs up to {c['output_scale']:.2f}) -> "
              f"{'AGREE' if good else 'DIFFER'}")  # fmt: skip
    else:
        print(f"  pointins.compat        forward {results['compat']['forward_s']:.3f} s (no spconv/torch_scatter "
              "installed: no peer comparison)")  # fmt: skip
    n = results["native"]
    good = n["same_voxels"] and n.get("max_abs_diff_vs_pointcept_file", 1e9) <= a.tol
    ok &= good
    print(f"  pointins PTv3 (native) forward {n['forward_s']:.3f} s; same voxels {n['same_voxels']}, max |diff| "
          f"{n.get('max_abs_diff_vs_pointcept_file', float('nan')):.2e} -> "
          f"{'AGREE' if good else 'DIFFER'}")  # fmt: skip
    losses = results["compat"]["train_losses"]
    trained = results["compat"]["grads_finite"] and losses[-1] < losses[0]
    ok &= trained
    print(f"  training steps on the CPU via pointins.compat: loss {' -> '.join(f'{v:.4f}' for v in losses)}, "
          f"gradients finite {results['compat']['grads_finite']}")  # fmt: skip
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
