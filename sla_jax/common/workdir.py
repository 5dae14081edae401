"""The run directory: checked writable, with room, and held by one run at a time (a lock file)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from sla_jax.common.errors import WorkdirError

LOCK_NAME = ".lock"


def write_probe(path: Path) -> None:
    """Make ``path`` and write, sync and remove a 4 KiB file in it; raises the OSError that stops it."""
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{os.getpid()}"
    with open(probe, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.fsync(f.fileno())
    probe.unlink()


def _check_writable(path: Path) -> None:
    try:
        write_probe(path)
    except OSError as error:
        raise WorkdirError(
            f"cannot write to the workdir {path} ({error.strerror or error}). Choose a writable "
            "--workdir, or fix its permissions and free space."
        ) from error


def check_free_space(path: str | os.PathLike, *, needed_bytes: int) -> None:
    """Raise when the file system of ``path`` has less than ``needed_bytes`` free."""
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise WorkdirError(
            f"the workdir {path} has {free / 2**20:.0f} MiB free, but this run needs about "
            f"{needed_bytes / 2**20:.0f} MiB for its checkpoints. Free space, lower "
            "--config.train.keep_checkpoints, or choose another --workdir."
        )


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"unreadable": text[:80]}


@contextlib.contextmanager
def claimed(workdir: str | os.PathLike, *, log=print):
    """Create ``workdir``, check that it takes writes, and hold its lock until the block ends.

    The lock is an exclusive ``flock`` on ``WORKDIR/.lock``: the kernel drops it when its process dies, so
    a lock left by a killed run is stale by construction and is taken over (with a notice). A second live
    run in the same workdir gets a :class:`WorkdirError` naming the holder.
    """
    path = Path(workdir).absolute()
    _check_writable(path)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise WorkdirError(
                f"the workdir {path} is in use by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}). Wait for it to finish or stop "
                "it, or use another --workdir."
            ) from None
        stale = _holder(fd)
        if stale:
            log(
                f"taking over a stale lock of {path} (pid {stale.get('pid', '?')} on {stale.get('host', '?')} "
                "is no longer running it)"
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(
            fd,
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            ).encode(),
        )
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
