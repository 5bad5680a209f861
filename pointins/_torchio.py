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


def _check_zip(path) -> None:
    """torch.save writes a zip of stored (uncompressed) records; refuse a crafted one that would expand far
    beyond its size before torch reads it."""
    import zipfile

    from pointins.data.readers._safeio import MAX_NPZ_RATIO, max_bytes, open_regular

    with open_regular(path) as f:
        if f.read(4) != b"PK\x03\x04":
            return  # a legacy (non-zip) pickle: torch.load's own checks apply
        f.seek(0)
        try:
            infos = zipfile.ZipFile(f).infolist()
        except Exception as e:
            raise CheckpointReadError(
                f"{path}: cannot read checkpoint (corrupt zip: {type(e).__name__}: {e})"
            ) from None
        total = sum(i.file_size for i in infos)
        size = max(1, sum(i.compress_size for i in infos))
        if total > max_bytes() or (total > 64 * 2**20 and total > MAX_NPZ_RATIO * size):
            raise CheckpointReadError(f"{path}: cannot read checkpoint: its records expand {size} bytes to {total}, "
                                      "which no torch.save file does (a zip bomb?)")  # fmt: skip


def torch_load(path, map_location="cpu"):
    """The object stored in ``path``, unpickled with ``weights_only=True``."""
    from pointins.data.readers._safeio import open_regular

    try:
        _check_zip(path)
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
    except CheckpointReadError:
        raise
    except Exception as e:  # zip errors, truncation, DataError from open_regular, ...
        msg = getattr(e, "problem", None) or f"{type(e).__name__}: {e}"
        raise CheckpointReadError(f"{path}: cannot read checkpoint ({str(msg)[:300]})") from None
