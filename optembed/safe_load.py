"""The one way optembed reads a torch file: tensors and plain containers only, never code.

Artifact stores are shared folders (a team's NFS, a downloaded artifact), so every ``.pt`` file
the tool reads goes through :func:`load_tensor_file`, which uses ``torch.load(weights_only=True)``:
a file that holds anything but tensors, numbers, strings, lists, tuples and dicts is refused
before any of its content can run. Every failure is one :class:`ArtifactError` naming the file.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from optembed.errors import ArtifactError, OptembedError

T = TypeVar("T")

FIX = "rerun the stage that wrote it with --force"


def load_tensor_file(path: Path, what: str, map_location: torch.device | str = "cpu") -> Any:
    """Read ``path`` (described as ``what`` in errors) with pickle code execution ruled out.

    Missing, truncated, foreign and unsafe files each raise one :class:`ArtifactError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} missing: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on foreign pickle protocols
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _first_sentence(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise ArtifactError(
                f"refusing to read {what} {path}: it holds objects other than tensors "
                f"(possibly code); {FIX}"
            ) from None
        raise ArtifactError(f"cannot read {what} {path}: {reason}; {FIX}") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, AttributeError) as exc:
        reason = _first_sentence(exc)
        raise ArtifactError(f"cannot read {what} {path} (truncated or corrupt: {reason}); {FIX}") from None
    except Exception as exc:  # any other decoding failure of a foreign file
        raise ArtifactError(f"cannot read {what} {path} ({type(exc).__name__}); {FIX}") from None


def _first_sentence(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")


def expect_dict(payload: Any, path: Path, what: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """``payload`` as a dict holding ``keys``, else one :class:`ArtifactError` naming the file."""
    if not isinstance(payload, dict):
        raise ArtifactError(f"{path} is not an optembed {what}; {FIX}")
    missing = [k for k in keys if k not in payload]
    if missing:
        raise ArtifactError(f"{what} {path} lacks {', '.join(missing)}; {FIX}")
    return payload


def rebuild(path: Path, what: str, build: Callable[[], T]) -> T:
    """Run ``build`` (which turns a loaded payload into objects); a payload whose pieces do not
    fit together (missing keys, wrong shapes or types) is one :class:`ArtifactError`."""
    try:
        return build()
    except OptembedError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise ArtifactError(
            f"{what} {path} is inconsistent ({type(exc).__name__}: {_first_sentence(exc)}); {FIX}"
        ) from None
