"""The command lines of ``launch/`` keep sla_jax's error contract (``sla_jax/cli.py``): a mistake is one
``error:`` line on stderr, exit status 2 for usage and config mistakes (a misspelt flag names the nearest
one), 1 for a data or output folder that cannot be used; no traceback. Standard library only, so that a
sweep starts without importing JAX."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one ``error:`` line (with the nearest flag for a misspelt one), exit 2.
    Flags are not abbreviated, and an unknown flag is reported before a missing required one."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def parse_args(self, args=None, namespace=None):
        known = {o for a in self._actions for o in a.option_strings}
        given = sys.argv[1:] if args is None else list(args)
        unknown = [a for a in given if a.startswith("--") and a.split("=", 1)[0] not in known]
        if unknown:
            self.error("unrecognized arguments: " + " ".join(unknown))
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            hints = []
            for arg in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1)
                if close:
                    hints.append(f"{arg.split('=', 1)[0]}: did you mean {close[0]}?")
            message = f"{message}" + (f" ({'; '.join(hints)})" if hints else "")
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def fail(error: Exception) -> int:
    """Print ``error: ...`` for a launch error and return its exit status (``exit_code``, else 2)."""
    print(f"error: {error}", file=sys.stderr)
    return getattr(error, "exit_code", 2)
