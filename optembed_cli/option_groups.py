"""Option groups: options declared once and added to every command that takes them.

A command names a group as one keyword parameter; :func:`with_groups` replaces that parameter,
in the signature Typer reads, by the group's options, and calls the command with the group's
values gathered in one dict under the parameter's name::

    @with_groups(model=MODEL_OPTIONS)
    def retrain(source: FromOpt = None, *, model: Values) -> None:
        build(**model)  # model == {"model": "deepfm", "embed_dim": 16, ...}
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

F = TypeVar("F", bound=Callable[..., Any])
Values = dict[str, Any]  # a group's option values, by parameter name


@dataclass(frozen=True)
class Option:
    name: str  # the parameter name (``embed_dim`` for ``--embed-dim``)
    kind: Any  # its ``Annotated[type, typer.Option(...)]``
    default: Any


@dataclass(frozen=True)
class OptionGroup:
    options: tuple[Option, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def only(self, *names: str) -> OptionGroup:
        """The group of these options alone, in the group's order."""
        unknown = set(names) - set(self.names)
        if unknown:
            raise KeyError(f"not in the group: {', '.join(sorted(unknown))}")
        return OptionGroup(tuple(o for o in self.options if o.name in names))


def group(defaults: Any, **kinds: Any) -> OptionGroup:
    """A group of options whose defaults are the attributes of ``defaults`` of the same names
    (a configuration dataclass instance): ``group(TrainConfig(), epochs=EpochsOpt, ...)``."""
    return OptionGroup(tuple(Option(name, kind, getattr(defaults, name)) for name, kind in kinds.items()))


def with_groups(**groups: OptionGroup) -> Callable[[F], F]:
    """Replace each keyword parameter named in ``groups`` by that group's options (see the module)."""

    def decorate(func: F) -> F:
        hints = get_type_hints(func, include_extras=True)
        params: list[inspect.Parameter] = []
        seen: set[str] = set()
        for p in inspect.signature(func).parameters.values():
            added = groups[p.name].options if p.name in groups else (Option(p.name, hints.get(p.name, p.annotation), p.default),)
            for o in added:
                if o.name in seen:
                    raise TypeError(f"{func.__name__}: option {o.name!r} is declared twice")
                seen.add(o.name)
                params.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.kind))
        missing = set(groups) - set(inspect.signature(func).parameters)
        if missing:
            raise TypeError(f"{func.__name__} has no parameter {', '.join(sorted(missing))} for its option group")

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            for name, grp in groups.items():
                kwargs[name] = {n: kwargs.pop(n) for n in grp.names}
            return func(**kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # Typer reads the signature above, not the command's own
        return wrapper  # type: ignore[return-value]

    return decorate
