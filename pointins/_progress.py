"""Progress bars: tqdm when installed, otherwise a plain one-line counter on stderr."""

from __future__ import annotations

import sys
import time


class _Plain:
    def __init__(self, total: int | None, desc: str, enabled: bool, initial: int = 0) -> None:
        self.total, self.desc, self.n = total, desc, initial
        self.tty = sys.stderr.isatty()
        # not a terminal: a plain line every 5% (logs of batch jobs), only where asked for a total
        self.enabled = enabled and (self.tty or bool(total))
        self.every = max(1, (total or 1) // 20)
        self.t0 = self._last = time.perf_counter()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if not self.enabled:
            return
        of = f"/{self.total}" if self.total else ""
        if self.tty and (now - self._last > 0.5 or self.n == self.total):
            self._last = now
            sys.stderr.write(f"\r{self.desc}: {self.n}{of} [{now - self.t0:.1f}s] {self.postfix}")
            sys.stderr.flush()
        elif not self.tty and (self.n % self.every == 0 or self.n == self.total):
            sys.stderr.write(f"{self.desc}: {self.n}{of} [{now - self.t0:.1f}s] {self.postfix}\n")
            sys.stderr.flush()

    def set_postfix(self, **kw) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def progress_bar(total: int | None = None, desc: str = "", enabled: bool = True, initial: int = 0):
    """A tqdm bar when tqdm is importable, else a minimal stderr counter (silent when not a terminal)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Plain(total, desc, enabled, initial)
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, initial=initial)
