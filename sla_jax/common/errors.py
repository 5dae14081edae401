"""Every error a user of sla_jax can meet, each saying what to do; standard library only, so that the
command lines that must not load JAX (``sla_jax.run_onnx``) keep the same error contract (``sla_jax.cli``).

Each is also importable from the module that raises it (``sla_jax.experiment.validation.ConfigError``,
``sla_jax.data.DataError``, ``sla_jax.training.loop.Interrupted``, ...).
"""

from __future__ import annotations

import os
import signal

SKIP_HINT = "or set --config.data.skip_bad_files=True to leave such files out (they are listed in results.json)"


class UsageError(Exception):
    """The command line is wrong (a missing or invalid flag or argument, an output that would replace a
    result unasked): the command itself must change."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and what is allowed."""


class DataError(ValueError):
    """A dataset folder or file that cannot be used as it is; says what to fix.

    ``path`` is the offending file, where there is one.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None


class WorkdirError(RuntimeError):
    """The workdir cannot be used: not writable, too full, held by another run, or holding no run of the
    kind asked for. Says what to do."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, permissions); the earlier checkpoints are intact."""


class WeightsError(ValueError):
    """A weights file that does not fit the ResNet-18 backbone; the message lists the offending keys."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of ``step`` was written (when there is a checkpoint manager)."""

    def __init__(self, signum: int, step: int, directory):
        self.signum, self.step, self.directory = signum, step, directory
        where = f"; a checkpoint of step {step} is in {directory}" if directory else ""
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}{where}")
