"""Wall time of a run's phases, for ``timing.json``: where the seconds of a run go besides training.

No library imports: :class:`Phases` is a stopwatch with named laps; :func:`process_age` says how long the
process has lived (interpreter start and imports, read by the command line before it starts the work).
"""

from __future__ import annotations

import contextlib
import os
import time


class Phases:
    """Seconds per named phase, summed when a phase runs more than once, in the order first run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def record(self) -> dict[str, float]:
        """``{"phases": {name: seconds}, "seconds": since this stopwatch started}``."""
        return {"phases": dict(self.seconds), "seconds": time.perf_counter() - self.started}


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``: interpreter start and imports included); None
    where the system does not say."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    start_ticks = int(fields[19])  # field 22 of stat(5), counted after the ")" that ends the command name
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
