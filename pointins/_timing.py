"""Phase timers for profiling the training step (``bench/profile_step.py``); off by default and then free.

Code marks phases with ``with phase("conv"):``; phases nest, so a phase's path is its parents' names joined by
``/`` (``step/student/encoder/conv``). When timing is on, each path accumulates wall seconds and calls; the
autograd backward of our custom ops runs on the thread that called ``backward()``, so phases opened there land
under that caller's ``backward`` phase. DataLoader workers forked after :func:`enable` time their own phases;
:class:`pointins.data.views.ViewDataset` hands them to the main process with each sample (``take()``) and
:func:`merge` files them under ``worker/``.

Off (the default) ``phase()`` returns one shared no-op context manager: a dictionary-free function call.
``POINTINS_PROFILE=1`` in the environment switches it on at import (for spawned processes).
"""

from __future__ import annotations

import os
import threading
import time

__all__ = [
    "Done",
    "enable",
    "enabled",
    "end_step",
    "merge",
    "phase",
    "report",
    "reset",
    "take",
    "thread_root",
    "use_cpu_clock",
]

_on = os.environ.get("POINTINS_PROFILE", "") not in ("", "0")
_local = threading.local()  # per thread: its phase stack, root prefix and clock
_lock = threading.Lock()
_acc: dict[str, list[float]] = {}  # path -> [seconds, calls]
_steps = 0
_skip = 0
_stop: int | None = None
_wall = [0.0, None]  # wall seconds of the timed steps, perf_counter at the last step end
_clock = time.perf_counter  # wall time in the training process; CPU time in data workers (see use_cpu_clock)


class Done(Exception):
    """Raised by :func:`end_step` after the requested number of timed steps (ends a profiling run early)."""


class _Null:
    __slots__ = ()

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NULL = _Null()


def _stack() -> list[str]:
    st = getattr(_local, "stack", None)
    if st is None:
        st = _local.stack = []
    return st


class _Phase:
    __slots__ = ("clock", "path", "stack", "t0")

    def __init__(self, path: str, stack: list[str]):
        self.path, self.stack = path, stack
        self.clock = getattr(_local, "clock", None) or _clock

    def __enter__(self):
        self.stack.append(self.path)
        self.t0 = self.clock()
        return self

    def __exit__(self, *exc):
        dt = self.clock() - self.t0
        self.stack.pop()
        with _lock:
            a = _acc.get(self.path)
            if a is None:
                _acc[self.path] = [dt, 1.0]
            else:
                a[0] += dt
                a[1] += 1.0
        return False


def phase(name: str):
    """A context manager timing ``name`` under the phases open around it in this thread (no-op unless timing is
    on). A thread's outermost phases go under its root (:func:`thread_root`), if it set one."""
    if not _on:
        return _NULL
    st = _stack()
    if st:
        return _Phase(f"{st[-1]}/{name}", st)
    root = getattr(_local, "root", None)
    return _Phase(f"{root}/{name}" if root else name, st)


def thread_root(root: str, cpu: bool = True) -> None:
    """File this thread's phases under ``root/`` and time them in this thread's CPU seconds (``cpu``): helper threads
    (e.g. the view threads of :class:`pointins.data.views.ThreadedBatches`) report what they cost, apart from the
    main thread's wall-clock phases."""
    _local.root = root
    _local.clock = time.thread_time if cpu else time.perf_counter


def enabled() -> bool:
    return _on


def use_cpu_clock() -> None:
    """Time this process's phases in CPU seconds of the calling thread (data workers: they run at a lowered
    priority, so their wall time is mostly waiting for a core and says nothing about their cost)."""
    global _clock
    _clock = time.thread_time


def enable(on: bool = True, *, skip_steps: int = 0, stop_after: int | None = None) -> None:
    """Switch timing on (or off). ``skip_steps``: steps whose timings are discarded (warm-up);
    ``stop_after``: :func:`end_step` raises :class:`Done` once this many steps (warm-up included) are done."""
    global _on, _skip, _stop, _steps
    _on, _skip, _stop, _steps = bool(on), int(skip_steps), stop_after, 0
    reset()
    _wall[:] = [0.0, time.perf_counter()]


def reset() -> None:
    with _lock:
        _acc.clear()
    _stack().clear()


def end_step() -> None:
    """The training loop calls this after every step: counts timed steps, drops warm-up timings, stops a
    profiling run when asked to."""
    global _steps
    if not _on:
        return
    _steps += 1
    now = time.perf_counter()
    if _steps <= _skip:
        _acc.clear()
    elif _wall[1] is not None:
        _wall[0] += now - _wall[1]
    _wall[1] = now
    if _stop is not None and _steps >= _stop:
        raise Done


def timed_steps() -> int:
    return max(0, _steps - _skip)


def wall() -> float:
    """Wall seconds of the timed steps (from the end of the last warm-up step to the end of the last step)."""
    return _wall[0]


def take() -> dict[str, list[float]]:
    """This process's accumulated phases (and clears them): what a worker hands back with a sample."""
    out = {k: list(v) for k, v in _acc.items()}
    _acc.clear()
    return out


def merge(timings: dict[str, list[float]] | None, prefix: str = "worker") -> None:
    """Add another process's phases under ``prefix/``."""
    if not _on or not timings:
        return
    for k, (sec, calls) in timings.items():
        a = _acc.setdefault(f"{prefix}/{k}", [0.0, 0.0])
        a[0] += sec
        a[1] += calls


def snapshot() -> dict[str, list[float]]:
    return {k: list(v) for k, v in _acc.items()}


def report(acc: dict[str, list[float]], steps: int, total: float | None = None, *, min_share: float = 0.0) -> str:
    """A phase table: one row per path, indented by depth, with ms per step, the share of ``total`` (seconds;
    default: the sum of the top-level main-process phases) and calls per step. A parent's ``(other)`` row is
    its time outside its timed children."""
    steps = max(1, steps)
    if total is None:
        total = sum(v[0] for k, v in acc.items() if "/" not in k and k != "worker")
    total = max(total, 1e-12)
    children: dict[str, list[str]] = {}
    for k in acc:
        parent = k.rsplit("/", 1)[0] if "/" in k else ""
        children.setdefault(parent, []).append(k)
    # implicit parents (e.g. "worker") get the sum of their children
    for parent in list(children):
        if parent and parent not in acc:
            acc = {**acc, parent: [sum(acc[c][0] for c in children[parent] if c in acc), 0.0]}
            grand = parent.rsplit("/", 1)[0] if "/" in parent else ""
            children.setdefault(grand, []).append(parent)
    rows = [f"{'phase':<52} {'ms/step':>9} {'share':>7} {'calls/step':>10}"]

    def walk(parent: str, depth: int) -> None:
        kids = sorted(set(children.get(parent, [])), key=lambda k: -acc[k][0])
        for k in kids:
            sec, calls = acc[k]
            if sec / total < min_share:
                continue
            name = "  " * depth + k.rsplit("/", 1)[-1]
            calls_s = f"{calls / steps:10.1f}" if calls else f"{'':>10}"
            rows.append(f"{name:<52} {1e3 * sec / steps:9.1f} {100 * sec / total:6.1f}% {calls_s}")
            if k in children:
                other = sec - sum(acc[c][0] for c in set(children[k]))
                walk(k, depth + 1)
                if other / total >= max(min_share, 0.001):
                    rows.append(f"{'  ' * (depth + 1) + '(other)':<52} {1e3 * other / steps:9.1f} "
                                f"{100 * other / total:6.1f}%")  # fmt: skip

    walk("", 0)
    return "\n".join(rows)
