"""One line for a value that is not among an option's fixed choices, with the nearest choice:
``error: --init: 'rewnd' is not one of auto, fresh, rewind, supernet; did you mean 'rewind'?``"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from enum import Enum
from typing import Any, get_args

_GIVEN = re.compile(r"'(?P<value>[^']*)' is not (?:one of|a valid)")


def did_you_mean(value: str, options: Sequence[str]) -> str | None:
    """The choice closest to ``value`` (case aside), if any is close enough to be a typo."""
    lowered = {o.lower(): o for o in options}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def not_one_of(flag: str, value: str, options: Sequence[str]) -> str:
    """The one-line message (without ``error:``) for ``value`` not among ``options``."""
    line = f"{flag}: {value!r} is not one of {', '.join(options)}"
    guess = did_you_mean(value, options)
    return f"{line}; did you mean {guess!r}?" if guess else line


def option_choices(param: Any) -> list[str] | None:
    """The fixed choices of a parsed option: its enum's values (Typer) or its Click ``Choice``."""
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return [str(m.value) for m in candidate]
    found = getattr(getattr(param, "type", None), "choices", None)
    return [str(c) for c in found] if found else None


def choice_error(exc: Any) -> str | None:
    """``error: FLAG: 'VALUE' is not one of ...; did you mean ...?`` for a Click ``BadParameter``
    raised by a choice option; ``None`` for any other bad parameter."""
    param = getattr(exc, "param", None)
    options = option_choices(param) if param is not None else None
    found = _GIVEN.search(str(getattr(exc, "message", exc)))
    if not options or found is None:
        return None
    flags = getattr(param, "opts", None) or [str(getattr(param, "name", "value"))]
    return "error: " + not_one_of(max(flags, key=len), found.group("value"), options)
