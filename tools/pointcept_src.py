"""Pieces of Pointcept's own code, read from a checkout at run time (never committed), for tests and benches.

    from pointcept_src import POINTCEPT, serialization, grid_sample   # with tools/ on sys.path

``POINTCEPT`` is the default checkout, ``../.mirror/Pointcept+Pointcept/repo`` (search tool: fetch
github:Pointcept/Pointcept); every loader takes ``repo=`` for another one.
"""

from __future__ import annotations

import ast
import copy
import importlib
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POINTCEPT = ROOT.parent / ".mirror" / "Pointcept+Pointcept" / "repo"


def _show(repo: Path, path: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def serialization(repo: Path = POINTCEPT, where: Path | None = None):
    """Pointcept's serialization package (``pointcept/models/utils/serialization``: ``encode``, ``decode``), imported
    as ``pc_serialization`` from a copy in ``where`` (a temporary folder when None)."""
    where = Path(where or tempfile.mkdtemp(prefix="pc-serialization-"))
    pkg = where / "pc_serialization"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in ("__init__.py", "default.py", "hilbert.py", "z_order.py"):
        (pkg / name).write_text(_show(repo, f"pointcept/models/utils/serialization/{name}"))
    sys.path.insert(0, str(where))
    try:
        sys.modules.pop("pc_serialization", None)
        return importlib.import_module("pc_serialization")
    finally:
        sys.path.remove(str(where))


def grid_sample(repo: Path = POINTCEPT):
    """Pointcept's ``GridSample`` class (with the ``index_operator`` it calls), compiled from the checkout's
    ``pointcept/datasets/transform.py`` (its registry decorator dropped; the rest of that file is not run)."""
    tree = ast.parse(_show(repo, "pointcept/datasets/transform.py"))
    keep = [n for n in tree.body if getattr(n, "name", None) in ("index_operator", "GridSample")]
    for n in keep:
        n.decorator_list = []
    ns = {"np": np, "copy": copy}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "pointcept/datasets/transform.py", "exec"), ns)
    return ns["GridSample"]


def extract(repo: Path, dest: Path) -> str:
    """Copy ``pointcept/`` of a checkout (``git archive``; a plain folder works too) into ``dest``; returns the
    commit (or "(working tree)")."""
    dest = Path(dest)
    if (Path(repo) / "pointcept").is_dir():
        shutil.copytree(Path(repo) / "pointcept", dest / "pointcept")
        return "(working tree)"
    archive = subprocess.run(["git", "-C", str(repo), "archive", "HEAD", "pointcept"], capture_output=True,
                             check=True).stdout  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def _package(name: str, path: Path) -> None:
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    sys.modules[name] = mod


def _timm_stand_in() -> None:
    """``timm.layers`` with the two names Pointcept's model files take from it (``DropPath``, ``trunc_normal_``),
    for when timm cannot be imported (it needs torchvision)."""
    import torch

    class DropPath(torch.nn.Module):
        """Stochastic depth per sample (training only); identity at p = 0."""

        def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
            super().__init__()
            self.drop_prob, self.scale_by_keep = float(drop_prob), scale_by_keep

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1.0 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
            return x * (mask / keep if self.scale_by_keep else mask)

    timm = types.ModuleType("timm")
    layers = types.ModuleType("timm.layers")
    layers.DropPath, layers.trunc_normal_ = DropPath, torch.nn.init.trunc_normal_
    timm.layers = layers
    sys.modules["timm"], sys.modules["timm.layers"] = timm, layers


def load_model(src: Path, path: str):
    """Import one of Pointcept's model files (``path`` inside the copied tree ``src``) without running the package
    ``__init__`` files (they import every model and its dependencies); ``pointcept.engines.hooks`` gets ``HookBase``
    from its own ``default.py``; timm is stood in for when it cannot be imported; ``torch_geometric.utils.scatter``
    (SpUNet's only use of PyG) is torch_scatter's ``scatter`` of whatever ``torch_scatter`` resolves to."""
    src = Path(src)
    pkg = path.removesuffix(".py").replace("/", ".").rsplit(".", 1)[0]
    names = ["pointcept", "pointcept.models", "pointcept.utils", "pointcept.engines", "pointcept.engines.hooks"]
    for name in [*names, pkg]:
        _package(name, src / name.replace(".", "/"))
    hooks = importlib.import_module("pointcept.engines.hooks.default")
    sys.modules["pointcept.engines.hooks"].HookBase = hooks.HookBase
    try:
        import timm.layers  # noqa: F401
    except Exception:
        _timm_stand_in()
    try:
        import torch_geometric.utils  # noqa: F401
    except Exception:
        import torch_scatter

        pyg, utils = types.ModuleType("torch_geometric"), types.ModuleType("torch_geometric.utils")
        utils.scatter = torch_scatter.scatter
        pyg.utils = utils
        sys.modules["torch_geometric"], sys.modules["torch_geometric.utils"] = pyg, utils
    return importlib.import_module(path.removesuffix(".py").replace("/", "."))
