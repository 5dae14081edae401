"""Multi-process (multi-host) data parallelism: join the JAX job the command line or environment describes.

One process per host (or per task): after :func:`initialize`, ``jax.devices()`` lists the devices of every
process and ``state.data_mesh()`` spans them all, so the jitted train step runs as one SPMD program whose
gradient reduction crosses processes (on CPU through JAX's default gloo collectives). Every process runs
the same Python program; files are written by process 0 only (:func:`is_primary`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import jax
import numpy as np

T = TypeVar("T")

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # JAX's own variable (host:port of process 0)
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def requested_job(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> dict | None:
    """The multi-process job asked for, as ``jax.distributed.initialize`` keyword arguments, or None.

    Explicit arguments win over ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``;
    without either, a SLURM step with more than one task (``srun``, ``SLURM_NTASKS`` > 1) is a job whose
    parameters JAX detects itself (empty dict). A single process (the default) is None.
    """
    address = coordinator_address or environ.get(ENV_COORDINATOR) or None
    count = num_processes if num_processes is not None else _env_int(environ, ENV_NUM_PROCESSES)
    index = process_id if process_id is not None else _env_int(environ, ENV_PROCESS_ID)
    if address is not None or count is not None or index is not None:
        missing = [
            name
            for name, value in (("coordinator_address", address), ("num_processes", count), ("process_id", index))
            if value is None
        ]
        if missing:
            raise ValueError(
                f"a multi-process run needs all of --coordinator_address, --num_processes and --process_id "
                f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing: {', '.join(missing)}"
            )
        if count < 1 or not 0 <= index < count:
            raise ValueError(
                f"--process_id must be in [0, --num_processes); got process_id={index}, num_processes={count}"
            )
        return None if count == 1 else dict(coordinator_address=address, num_processes=count, process_id=index)
    if _env_int(environ, "SLURM_NTASKS", default=1) > 1 and "SLURM_STEP_NODELIST" in environ:
        return {}
    return None


def initialize(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> bool:
    """Call ``jax.distributed.initialize`` when :func:`requested_job` asks for a job; True if it did.

    Must run before any JAX computation in the process.
    """
    job = requested_job(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id, environ=environ
    )
    if job is None:
        return False
    jax.distributed.initialize(**job)
    return True


def is_primary() -> bool:
    """True on the process that writes files (process 0; the only one in a single-process run)."""
    return jax.process_index() == 0


def primary_first(fn: Callable[[], T]) -> T:
    """``fn()`` on process 0, then, after a barrier, on the others: process 0 prepares shared files
    (generated demo data, dataset caches) before the others read them."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    result = fn() if is_primary() else None
    multihost_utils.sync_global_devices("sla_jax primary_first")
    return result if is_primary() else fn()


def replicated_array(host_array: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """A global array from a copy that every process holds: each process places only its own devices'
    shards, with no cross-process transfer or equality check (``jax.device_put`` would all-gather it
    to check that the processes agree)."""
    return jax.make_array_from_callback(host_array.shape, sharding, lambda index: host_array[index])


def _env_int(environ: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
