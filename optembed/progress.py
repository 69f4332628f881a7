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


class NullTask:
    """A task that shows nothing."""

    def advance(self, amount: float = 1.0) -> None:
        return None

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None


class NullReporter:
    """Swallows all progress; the default for library use and tests."""

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Task:
        return NullTask()

    def message(self, text: str) -> None:
        return None


NULL = NullReporter()


def stage_label(prefix: str, description: str) -> str:
    """``description`` named after the stage ``prefix``: ``("supernet optembed", "epoch 1/4")``
    gives ``"supernet optembed epoch 1/4"``. A description that already starts with the stage's
    word (``"search: widths"``, ``"evaluating"``) has that word replaced by the prefix, so the name
    is never said twice."""
    if not prefix:
        return description
    stem = prefix.split()[0]
    words = description.split(maxsplit=1)
    if words:
        first = words[0]
        core = first.rstrip(":")
        if core == stem or (len(stem) > 4 and core.startswith(stem.rstrip("e")) and core.endswith("ing")):
            return prefix + first[len(core):] + (" " + words[1] if len(words) > 1 else "")
    return f"{prefix} {description}"


class Prefixed:
    """A reporter whose tasks and messages carry the name of the stage that reports them."""

    def __init__(self, inner: Reporter, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Task:
        return _PrefixedTask(self.inner.task(stage_label(self.prefix, description), total, unit), self.prefix)

    def message(self, text: str) -> None:
        self.inner.message(text if text.startswith(self.prefix) else f"{self.prefix}: {text}")


class _PrefixedTask:
    def __init__(self, inner: Task, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix

    def advance(self, amount: float = 1.0) -> None:
        self.inner.advance(amount)

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        named = stage_label(self.prefix, description) if description is not None else None
        self.inner.update(description=named, total=total)

    def close(self) -> None:
        self.inner.close()
