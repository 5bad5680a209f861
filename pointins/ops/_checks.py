"""Deferred input checks: one host synchronisation per training step instead of one per op.

Every op validates its inputs. On a GPU a check that looks at values (offsets sorted, no negative grid
coordinates, a kernel's error flags) is a device-to-host copy that stalls the stream; the PTv3 data path calls
dozens of ops per forward. Inside :func:`deferred_checks` those checks are queued on the device instead: the C++
ops OR their error flags into a device accumulator, Python-side checks queue a boolean tensor with their message,
and one read at the end of the block (or at :func:`check_deferred`) raises the first problem found. Kernels never
read or write out of bounds on bad input (they clamp), so a deferred error only arrives later, never as a crash;
the results computed after it are garbage and are discarded by the raise.

    with pointins.ops.deferred_checks(device):   # e.g. around one training step
        loss = model.step_losses(batch, ...)
    loss.backward()                               # only after the checks passed

Checks that decide an output *size* (a data-dependent number of voxels, the serialization depth) still sync:
they are not checks but computations.
"""

from __future__ import annotations

import contextlib
import threading

import torch

__all__ = ["DeferredCheckError", "check_deferred", "defer", "deferred_active", "deferred_checks"]

_FLAG_NAMES = {1: "NaN or Inf in a floating input", 2: "a value does not fit the output integer / key bits",
               4: "a negative grid coordinate", 8: "a batch index out of range for the key layout",
               16: "invalid CSR offsets", 32: "a key no pack_keys call can produce",
               64: "an index beyond its bound (e.g. a segment id >= num_segments)"}  # fmt: skip


class DeferredCheckError(ValueError):
    """An input check that failed inside :func:`deferred_checks` (raised at the end of the block)."""


class _State(threading.local):
    def __init__(self):
        self.stack: list[dict] = []  # one frame per nested deferred_checks: device str -> {"acc", "checks"}


_state = _State()


def deferred_active(device: torch.device | str | None = None) -> bool:
    """Whether checks on ``device`` are being deferred (any device when None)."""
    if not _state.stack:
        return False
    return device is None or str(torch.device(device)) in _state.stack[-1]


def defer(bad: torch.Tensor, message: str) -> bool:
    """Queue a check (``bad``: a boolean tensor, true when the input is invalid) if checks on its device are
    deferred; returns False when they are not (the caller then checks at once)."""
    if not _state.stack:
        return False
    frame = _state.stack[-1].get(str(bad.device))
    if frame is None:
        return False
    frame["checks"].append((bad.reshape(-1).any(), message))
    return True


def _ext_op(name: str):
    from pointins import _ext

    if _ext.try_load() is None:
        return None
    return getattr(torch.ops.pointins, name, None)


def check_deferred(device: torch.device | str | None = None) -> None:
    """Read the queued checks of ``device`` (every deferred device when None) once and raise
    :class:`DeferredCheckError` for the first failed one; the queues are emptied either way."""
    if not _state.stack:
        return
    frame = _state.stack[-1]
    for dev, entry in frame.items():
        if device is not None and dev != str(torch.device(device)):
            continue
        checks, acc = entry["checks"], entry["acc"]
        flags = torch.stack([acc.reshape(()).bool()] + [c for c, _ in checks]) if checks else acc.reshape(1).bool()
        host = flags.tolist()  # the one synchronisation
        word = int(acc.item()) if host[0] else 0
        entry["checks"] = []
        acc.zero_()
        msgs = [m for ok, (_, m) in zip(host[1:], checks, strict=True) if ok]
        if word or msgs:
            bits = [text for bit, text in _FLAG_NAMES.items() if word & bit]
            why = "; ".join(msgs + ([f"a kernel reported: {', '.join(bits)}"] if bits else []))
            raise DeferredCheckError(
                f"pointins: a deferred input check failed on {dev}: {why}. The results computed since the last check "
                "are invalid. Re-run the step outside pointins.ops.deferred_checks() to get the failing op's own error."
            )


@contextlib.contextmanager
def deferred_checks(*devices, check: bool = True):
    """Defer value checks on ``devices`` (default: the current CUDA device, else the CPU) until the block ends;
    then check once (``check=False``: leave it to :func:`check_deferred` inside the block). Nested blocks use the
    innermost."""
    devs = [torch.device(d) for d in devices] or [
        torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    ]
    frame = {str(d): {"acc": torch.zeros(1, dtype=torch.int32, device=d), "checks": []} for d in devs}
    setter = _ext_op("set_deferred_flags")
    _state.stack.append(frame)
    if setter is not None:
        for entry in frame.values():
            setter(entry["acc"])
    ok = False
    try:
        yield
        ok = True
    finally:
        try:
            if ok and check:
                check_deferred()
        finally:
            _state.stack.pop()
            if setter is not None:
                for d in devs:
                    setter(None, d)
                if _state.stack:  # re-register the enclosing block's accumulators
                    for entry in _state.stack[-1].values():
                        setter(entry["acc"])


def misplaced(op: str, param: str, value, meant: str, signature: str) -> TypeError | None:
    """A TypeError for a positional call that put a plain number (or a string) where ``param`` expects an array
    (or a curve name): it names the parameter the value filled, the one it was probably meant for, and the
    signature. None when ``value`` is not such a slip."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number or isinstance(value, str)):
        return None
    return TypeError(f"pointins.{op}: the value {value!r} filled the parameter '{param}' (positional); "
                     f"did you mean {meant}={value!r}? The signature is pointins.ops.{signature}.")  # fmt: skip
