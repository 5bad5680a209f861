"""Loading checkpoints as data: ``torch.load(weights_only=True)`` of a regular file, with one clear error.

A pickle that would run code (``os.system``, ``eval``, any global outside PyTorch's allow-list) is refused by
the weights-only unpickler before anything runs; a FIFO or device named ``*.pt`` is refused before it is read.
"""

from __future__ import annotations

import pickle
import re
import warnings

import torch

__all__ = ["CheckpointReadError", "torch_load"]


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read as data (corrupt, not a checkpoint, or a code-running pickle)."""


def torch_load(path, map_location="cpu"):
    """The object stored in ``path``, unpickled with ``weights_only=True``."""
    from pointins.data._safeio import open_regular

    try:
        with open_regular(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of files it then refuses
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(\n\n|$)", str(e), re.S)
        detail = (m.group(1) if m else str(e).strip().splitlines()[0] if str(e).strip() else "").strip()[:200]
        raise CheckpointReadError(
            f"{path}: cannot read checkpoint: the weights-only unpickler refused it ({detail}). Only tensors, numbers, "
            "strings and containers are loaded (weights_only=True): the file is corrupt, or it asks to import or "
            "call something, which could run code, and it is never unpickled."
        ) from None
    except Exception as e:  # zip errors, truncation, DataError from open_regular, ...
        msg = getattr(e, "problem", None) or f"{type(e).__name__}: {e}"
        raise CheckpointReadError(f"{path}: cannot read checkpoint ({str(msg)[:300]})") from None
