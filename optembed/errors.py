"""User-facing errors: one clear sentence, shown on stderr without a traceback."""

from __future__ import annotations


class OptembedError(Exception):
    """An error caused by the user's input or environment, not by a bug.

    The command-line layer prints ``str(err)`` on one line and exits with ``exit_code``.
    """

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class DataError(OptembedError):
    """The input data is missing, malformed or empty."""


class ArtifactError(OptembedError):
    """An artifact is missing, of the wrong stage, or incompatible with another."""


class ConfigError(OptembedError):
    """An option or configuration value is invalid."""


class TrainingError(OptembedError):
    """Training could not go on (for example, the loss became NaN)."""
