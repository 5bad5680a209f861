"""Pointcept's own SpUNet-v1m1 model file (``spconv_unet_v1m1_base.py``: submanifold blocks, strided SparseConv3d
down, SparseInverseConv3d up, BatchNorm, ``indice_key`` caches), unmodified, on pointins.compat.spconv.

    python tools/pointcept_spunet.py                 # Pointcept from ../.mirror/Pointcept+Pointcept/repo

Same set-up as tools/pointcept_ptv3.py (nothing of Pointcept committed; fresh processes at one thread): a
``peer`` run on spconv (when installed) writes weights, input and logits; the ``compat`` run, with spconv,
torch_scatter and flash_attn blocked, loads the same weights, compares the logits and takes SGD steps on the CPU.
Both run in train mode (BatchNorm on batch statistics; nothing random), as spconv's CPU build refuses a biased conv
in eval mode. Exit status 0 when the logits agree (max abs diff <= ``--tol``) and the loss falls.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import pointcept_ptv3 as ptv3  # noqa: E402
import pointcept_src  # noqa: E402

FILE = "pointcept/models/sparse_unet/spconv_unet_v1m1_base.py"


def _child(a) -> int:
    import subprocess  # noqa: F401  (kept: the child is a plain script run)

    import torch

    torch.set_num_threads(1)
    work = Path(a.work)
    res: dict = {"mode": a.mode}
    if a.mode == "compat":
        import pointins.compat

        res["served"] = pointins.compat.install(peers=("spconv", "torch_scatter"))
        sys.meta_path.insert(0, ptv3._Block())
    mod = pointcept_src.load_model(work / "src", FILE)
    torch.manual_seed(0)
    model = mod.SpUNetBase(in_channels=9, num_classes=13, layers=(1, 1, 1, 1, 1, 1, 1, 1)).train()
    peer = work / "peer.pt"
    if a.mode == "compat" and peer.exists():
        saved = torch.load(peer, weights_only=True)
        model.load_state_dict(saved["state_dict"], strict=True)
        batch = saved["batch"]
    else:
        batch = ptv3._batch(a.points)
    batch = {k: batch[k] for k in ("grid_coord", "feat", "offset")}
    state = {k: v.clone() for k, v in model.state_dict().items()}  # before BatchNorm's running stats move

    def fwd():
        with torch.no_grad():
            return model({k: v.clone() for k, v in batch.items()})

    logits, res["forward_s"] = ptv3._timed(fwd, a.repeat)
    res["voxels"] = int(batch["feat"].shape[0])
    if a.mode == "peer":
        torch.save({"state_dict": state, "batch": batch, "logits": logits}, peer)
    else:
        if peer.exists():
            ref = torch.load(peer, weights_only=True)["logits"]
            res["max_abs_diff_vs_peer"] = float((ref - logits).abs().max())
            res["output_scale"] = float(ref.abs().max())
        z = batch["grid_coord"][:, 2].float()
        target = torch.bucketize(z, torch.quantile(z, torch.tensor([0.25, 0.5, 0.75])))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses = []
        for _ in range(a.steps):
            loss = torch.nn.functional.cross_entropy(model({k: v.clone() for k, v in batch.items()}), target)
            opt.zero_grad()
            loss.backward()
            res.setdefault("grads_finite", True)
            res["grads_finite"] &= all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
            opt.step()
            losses.append(float(loss.detach()))
        res["train_losses"] = losses
    (work / f"{a.mode}.json").write_text(json.dumps(res))
    return 0


def main(argv=None) -> int:
    import subprocess

    p = argparse.ArgumentParser(prog="python tools/pointcept_spunet.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=None, help="a Pointcept checkout (default ../.mirror/...)")
    p.add_argument("--points", type=int, default=40_000, help="points before grid sampling, two rooms (40000)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--mode", choices=("peer", "compat"), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.mode:
        return _child(a)
    repo = a.repo or pointcept_src.POINTCEPT
    if not repo.exists():
        print(f"no Pointcept checkout at {repo}: fetch github:Pointcept/Pointcept or pass --repo", file=sys.stderr)
        return 2
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="pointcept-spunet-") as tmp:
        work = Path(tmp)
        results["pointcept_commit"] = pointcept_src.extract(repo, work / "src")
        import importlib.util

        modes = (["peer"] if importlib.util.find_spec("spconv") is not None else []) + ["compat"]
        for mode in modes:
            cmd = [sys.executable, __file__, "--mode", mode, "--work", str(work), "--points", str(a.points),
                   "--repeat", str(a.repeat), "--steps", str(a.steps)]  # fmt: skip
            if subprocess.run(cmd, cwd=ROOT, check=False).returncode:
                print(f"pointcept_spunet: the {mode} run failed", file=sys.stderr)
                return 1
            results[mode] = json.loads((work / f"{mode}.json").read_text())
    c = results["compat"]
    ok = c["grads_finite"] and c["train_losses"][-1] < c["train_losses"][0]
    print(f"Pointcept {results['pointcept_commit'][:12]} SpUNet-v1m1 (one block per stage), {c['voxels']} voxels, "
          "1 thread")  # fmt: skip
    if "peer" in results:
        good = c["max_abs_diff_vs_peer"] <= a.tol
        ok &= good
        print(f"  spconv          forward {results['peer']['forward_s']:.3f} s")
        print(f"  pointins.compat forward {c['forward_s']:.3f} s; logits max |diff| {c['max_abs_diff_vs_peer']:.2e} "
              f"(up to {c['output_scale']:.2f}) -> {'AGREE' if good else 'DIFFER'}")  # fmt: skip
    else:
        print(f"  pointins.compat forward {c['forward_s']:.3f} s (spconv not installed: no comparison)")
    print(f"  SGD steps on the CPU: loss {' -> '.join(f'{v:.4f}' for v in c['train_losses'])}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
