"""The error every reader raises for a file it cannot read (its own module, so imports run one way)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A file that cannot be read: corrupt, truncated, inconsistent, or of an unknown kind."""

    unexpected = False  # True when no specific check caught the problem (see read())

    def __init__(self, path, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")
