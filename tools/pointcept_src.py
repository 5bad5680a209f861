"""Pieces of Pointcept's own code, read from a checkout at run time (never committed), for tests and benches.

    from pointcept_src import POINTCEPT, serialization, grid_sample   # with tools/ on sys.path

``POINTCEPT`` is the default checkout, ``../.mirror/Pointcept+Pointcept/repo`` (search tool: fetch
github:Pointcept/Pointcept); every loader takes ``repo=`` for another one.
"""

from __future__ import annotations

import ast
import copy
import importlib
import subprocess
import sys
import tempfile
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
