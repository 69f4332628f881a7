"""A minimal progress protocol so the core library can report work without Rich."""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    def advance(self, amount: float = 1.0) -> None: ...

    def update(self, *, description: str | None = None, total: float | None = None) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    """Creates progress tasks and receives short status messages."""

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Task: ...

    def message(self, text: str) -> None: ...


class _NullTask:
    def advance(self, amount: float = 1.0) -> None:
        return None

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None


class NullReporter:
    """Swallows all progress; the default for library use and tests."""

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Task:
        return _NullTask()

    def message(self, text: str) -> None:
        return None


NULL = NullReporter()
