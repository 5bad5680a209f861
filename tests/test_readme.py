"""The README's usage example and the docstring examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.skipif(not README.is_file(), reason="not running from a source checkout")
def test_readme_python_blocks_run():
    import sys

    from pointins.compat import PEERS

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    # a block calls pointins.compat.install(): put the peers' module names back afterwards, so later tests see
    # whatever this process had (a real torch_scatter / spconv or nothing)
    names = [n for mods in PEERS.values() for n in mods]
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), {})
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


@pytest.mark.parametrize(
    "module",
    [
        "pointins.ops.keys",
        "pointins.ops.serialize",
        "pointins.ops.voxel",
        "pointins.ops.segment",
        "pointins.ops.cluster",
        "pointins.ops.attention",
        "pointins.ops.sparse_conv",
        "pointins.models",
        "pointins.data.synthetic",
        "pointins.data.readers._dispatch",
        "pointins.config",
        "pointins.eval.metrics",
        "pointins.experiments.ablation",
    ],
)
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
