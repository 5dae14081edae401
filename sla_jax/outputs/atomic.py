"""Files that are complete or absent: every file sla_jax writes goes to a temporary file beside its target and
is renamed over it only once it is whole (``os.replace`` is atomic on one file system), so an interrupted or
failing command never leaves a half-written or emptied result. JSON is strict: a number that is not finite
is written as ``null`` with its reason beside it, never as the ``NaN`` token that JSON does not have.

Standard library only (``sla_jax.run_onnx`` and ``launch/`` use it without JAX).
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import shutil
import tempfile

UNDEFINED = "_undefined"  # suffix of the key that gives the reason a value is null


@contextlib.contextmanager
def replacing(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """Open a temporary file beside ``path``; when the block ends without an error it is flushed, synced and
    renamed to ``path``; on an error it is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)[:200]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def printable(text) -> str:
    """A path or name as text that any UTF-8 file can hold: bytes that are not UTF-8 (in a file name the
    operating system allows) as ``\\xNN`` escapes."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def strict(value, *, reason: str | None = None):
    """``value`` with every non-finite number replaced by None; in a dict, ``KEY_undefined`` beside such a
    KEY says why (``reason``, else the number it was), unless the dict already says it."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key] = strict(item, reason=reason)
            if _non_finite(item) and f"{key}{UNDEFINED}" not in value:
                out[f"{key}{UNDEFINED}"] = reason or f"not a finite number ({item})"
        return out
    if isinstance(value, (list, tuple)):
        return [strict(item, reason=reason) for item in value]
    if _non_finite(value):
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogate escapes)
            return printable(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalars
        return strict(value.item(), reason=reason)
    return value


def _non_finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(float(value))


def dumps(value, **kwargs) -> str:
    """``json.dumps`` of :func:`strict` ``(value)``; refuses any NaN or Infinity that would remain."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, value, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON at ``path``, written whole or not at all; returns the path."""
    text = dumps(value, indent=indent, sort_keys=sort_keys)
    with replacing(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return os.fspath(path)


def write_text(path: str | os.PathLike, text: str) -> str:
    with replacing(path, "w", encoding="utf-8") as f:
        f.write(text)
    return os.fspath(path)


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> str:
    """``fig.savefig`` through a temporary file (the format from the suffix of ``path``)."""
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    with replacing(path, "wb") as f:
        fig.savefig(f, format=suffix, **savefig_kwargs)
    return os.fspath(path)


def save_npz(path: str | os.PathLike, *, compressed: bool = False, **arrays) -> str:
    """``numpy.savez`` (or ``savez_compressed``) through a temporary file."""
    import numpy as np

    with replacing(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return os.fspath(path)


@contextlib.contextmanager
def replacing_folder(path: str | os.PathLike):
    """A fresh temporary folder beside ``path`` to fill; when the block ends without an error it takes the
    place of ``path`` (a folder already there is removed only after the new one is complete)."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)[:200]}.", suffix=".tmp")
    try:
        yield temporary
        os.chmod(temporary, 0o755)
        if os.path.isdir(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)[:200]}.", suffix=".old")
            os.rmdir(old)
            os.replace(path, old)
            os.replace(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
