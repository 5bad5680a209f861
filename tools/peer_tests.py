"""Run a peer library's own test suite against PointINS's stand-in for it (nothing of the peer is committed).

    python tools/peer_tests.py torch_scatter            # ../.mirror/rusty1s+pytorch_scatter (search tool: fetch)
    python tools/peer_tests.py torch_scatter --repo DIR  # any checkout of github:rusty1s/pytorch_scatter

The peer's ``test/`` folder is copied from its git checkout (``git archive``; a plain folder works too) into a
temporary folder with a ``conftest.py`` that calls :func:`pointins.compat.install`, so ``import torch_scatter``
inside the tests resolves to :mod:`pointins.compat.torch_scatter`; then pytest runs there. Extra arguments go to
pytest. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = {"torch_scatter": ("rusty1s+pytorch_scatter", "test")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/peer_tests.py", description=__doc__.split("\n\n")[0])
    p.add_argument("peer", choices=sorted(PEERS))
    p.add_argument("--repo", type=Path, default=None, help="the peer's checkout (default: ../.mirror/<peer>/repo)")
    a, rest = p.parse_known_args(argv)
    mirror, tests = PEERS[a.peer]
    repo = a.repo or ROOT.parent / ".mirror" / mirror / "repo"
    if not repo.exists():
        print(f"no checkout of {a.peer} at {repo}: fetch it (search tool: fetch github:{mirror.replace('+', '/')}) "
              "or pass --repo", file=sys.stderr)  # fmt: skip
        return 2
    with tempfile.TemporaryDirectory(prefix=f"peer-{a.peer}-") as tmp:
        dest = Path(tmp)
        if (repo / tests).is_dir():
            shutil.copytree(repo / tests, dest / tests)
        else:  # a bare git mirror
            archive = subprocess.run(["git", "-C", str(repo), "archive", "HEAD", tests], capture_output=True,
                                     check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        check = f"assert {a.peer!r} in pointins.compat.install(peers=[{a.peer!r}]), 'a real {a.peer} was imported'"
        (dest / "conftest.py").write_text(f"import pointins.compat\n\n{check}\n")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests, *rest]
        return subprocess.run(cmd, cwd=dest, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
