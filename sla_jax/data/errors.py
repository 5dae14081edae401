"""The error every data problem raises: it names the file and what to do."""

from __future__ import annotations

import os

SKIP_HINT = (
    "or set --config.data.skip_bad_files=True to leave such files out (they are "
    "listed in results.json)"
)


class DataError(ValueError):
    """A dataset folder or file that cannot be used as it is; says what to fix.

    ``path`` is the offending file, where there is one.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None
