"""The set of native sources that make up ``pointins._C`` and their hash.

Used twice: by ``setup.py`` (the hash is compiled into the extension) and at import time by
``pointins._ext`` (a checkout whose sources no longer match the compiled extension is stale).
Standard library only: ``setup.py`` loads this file before the package is importable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

NATIVE_DIRS = ("csrc", "kernels")
NATIVE_SUFFIXES = (".c", ".cc", ".cpp", ".cu", ".cuh", ".h", ".hpp")


def native_sources(root: Path) -> list[Path]:
    """All native source files under ``root/csrc`` and ``root/kernels``, sorted."""
    files: list[Path] = []
    for d in NATIVE_DIRS:
        base = root / d
        if base.is_dir():
            files.extend(p for p in base.rglob("*") if p.suffix in NATIVE_SUFFIXES and p.is_file())
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def source_hash(root: Path) -> str:
    """SHA-256 (first 16 hex digits) over the relative paths and contents of the sources."""
    h = hashlib.sha256()
    for p in native_sources(root):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]
