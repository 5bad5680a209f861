"""Progress bars: tqdm when installed, otherwise a plain one-line counter on stderr."""

from __future__ import annotations

import sys
import time


class _Plain:
    def __init__(self, total: int | None, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.enabled, self.n = total, desc, enabled and sys.stderr.isatty(), 0
        self.t0 = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.5 or self.n == self.total):
            self._last = now
            of = f"/{self.total}" if self.total else ""
            sys.stderr.write(f"\r{self.desc}: {self.n}{of} [{now - self.t0:.1f}s]")
            sys.stderr.flush()

    def set_postfix(self, **kw) -> None:  # accepted for tqdm compatibility
        pass

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def progress_bar(total: int | None = None, desc: str = "", enabled: bool = True):
    """A tqdm bar when tqdm is importable, else a minimal stderr counter (silent when not a terminal)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Plain(total, desc, enabled)
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)
