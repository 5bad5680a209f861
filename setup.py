"""Build of the ``pointins._C`` extension.

    pip install --no-build-isolation -e .

builds against the torch that is already installed (build isolation would fetch a second,
multi-GB torch, so it is refused below). The C++ CPU ops are always compiled (OpenMP through
``at::parallel_for``); the CUDA ops (``kernels/*.cu`` + ``csrc/cuda/*.cpp``) are compiled when
``torch.version.cuda`` is set and nvcc is found, for ``TORCH_CUDA_ARCH_LIST`` (default
"8.0;9.0"). Environment switches:

    POINTINS_FORCE_CPU=1     build the CPU part only, even with a CUDA torch
    POINTINS_FORCE_CUDA=1    fail instead of silently skipping the CUDA part
    MAX_JOBS=N               parallel compile jobs (ninja)
    POINTINS_DEBUG=1         -O0 -g
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _toolkit_of(nvcc: str) -> str | None:
    """The CUDA toolkit folder (with include/cuda_runtime.h) of an nvcc on the PATH. nvcc may be a symlink or a
    small wrapper script outside the toolkit (conda, environment modules, /usr/local/bin wrappers): then torch's
    guess (the folder above the wrapper) has no CUDA headers, so ask nvcc itself where its TOP is."""
    import subprocess

    real = Path(os.path.realpath(nvcc))
    home = real.parent.parent
    if (home / "include" / "cuda_runtime.h").exists():
        return str(home)
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        line = line.lstrip("#$ ").strip()
        if line.startswith("TOP="):
            top = Path(line[4:].strip()).resolve()
            for cand in (top, top.parent):
                if (cand / "include" / "cuda_runtime.h").exists():
                    return str(cand)
    return None


if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
    import shutil

    _nvcc = shutil.which("nvcc")
    _home = _toolkit_of(_nvcc) if _nvcc else None
    if _home:
        os.environ["CUDA_HOME"] = _home  # before torch.utils.cpp_extension reads it

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - exercised only by a misconfigured install
    sys.exit(
        "PointINS compiles against the torch that is already installed, and torch was not found "
        "in this build environment.\n"
        "  CPU machine: pip install torch==2.13.0 && pip install --no-build-isolation -e .\n"
        "  Without --no-build-isolation pip builds in an empty environment; do not let it install "
        "an unpinned torch (several GB of CUDA packages)."
    )


def _load_sources_module():
    spec = importlib.util.spec_from_file_location("_pointins_sources", ROOT / "pointins" / "_sources.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() not in ("", "0", "false", "no")


def _want_cuda() -> bool:
    if _flag("POINTINS_FORCE_CPU"):
        return False
    reasons = []
    if torch.version.cuda is None:
        reasons.append("this torch is a CPU build (torch.version.cuda is None)")
    if CUDA_HOME is None:
        reasons.append("nvcc / CUDA_HOME not found")
    elif not (Path(CUDA_HOME) / "include" / "cuda_runtime.h").exists():
        reasons.append(f"CUDA_HOME={CUDA_HOME} has no include/cuda_runtime.h; set CUDA_HOME to the CUDA toolkit folder")
    if not reasons:
        return True
    if _flag("POINTINS_FORCE_CUDA"):
        sys.exit("POINTINS_FORCE_CUDA=1 but the CUDA part cannot be built: " + "; ".join(reasons))
    print("pointins: building the CPU ops only (" + "; ".join(reasons) + ")", file=sys.stderr)
    return False


def extensions():
    sources_mod = _load_sources_module()
    with_cuda = _want_cuda()
    rel = lambda p: os.path.relpath(p, ROOT)
    sources = [rel(p) for p in sorted((ROOT / "csrc").glob("*.cpp"))]
    sources += [rel(p) for p in sorted((ROOT / "csrc" / "cpu").glob("*.cpp"))]
    cxx = ["-O0", "-g"] if _flag("POINTINS_DEBUG") else ["-O3"]
    cxx += ["-fopenmp", "-Wall", "-Wno-unused-function"]
    macros = [
        ("POINTINS_SOURCE_HASH", f'"{sources_mod.source_hash(ROOT)}"'),
        ("POINTINS_TORCH_VERSION", f'"{torch.__version__}"'),
    ]
    include_dirs = [str(ROOT / "kernels" / "include"), str(ROOT / "csrc")]
    kwargs = dict(
        include_dirs=include_dirs,
        define_macros=macros,
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    if not with_cuda:
        return [CppExtension("pointins._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)]

    arch_list = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    macros += [("POINTINS_WITH_CUDA", None), ("POINTINS_CUDA_ARCHS", f'"{arch_list}"')]
    sources += [rel(p) for p in sorted((ROOT / "csrc" / "cuda").glob("*.cpp"))]
    sources += [rel(p) for p in sorted((ROOT / "kernels").glob("*.cu"))]
    nvcc = ["-O3", "-lineinfo"]
    if _flag("POINTINS_DEBUG"):
        nvcc = ["-O0", "-g", "-G"]
    return [CUDAExtension("pointins._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
