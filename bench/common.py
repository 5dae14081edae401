"""Helpers shared by the benchmark scripts: timing, peak memory, one measurement per subprocess, tables.

Each measurement runs in its own process (``run_worker``), so its peak RSS is its own and no JIT cache,
thread pool or allocator state carries over from the measurement before it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Callable, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# sla_jax's defaults (``model.head``, ``train`` SGD), written out rather than imported: importing sla_jax adds
# its XLA flags to this process's environment, which the workers inherit (the XLA-defaults variants need
# them absent); tests/test_bench.py checks the two agree.
PAPER_HEAD = (512, 512, 512, 512, 512, 512, 512, 512, 128)
SGD = {"learning_rate": 0.03, "momentum": 0.9, "weight_decay": 3e-5}


def sla_jax_optimizer(*, total_steps: int = 1000):
    """sla_jax's optimizer (cosine schedule over ``total_steps``) with the benchmarks' :data:`SGD` settings."""
    from sla_jax.training.state import make_optimizer

    return make_optimizer(**SGD, total_steps=total_steps)


def flops(compiled) -> float:
    """FLOPs of a compiled JAX program by XLA's cost analysis (0 where the backend gives none)."""
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def median_seconds(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls; also every time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times


def run_worker(script: str, args: Sequence[str], *, env: dict | None = None, timeout: float = 3600) -> dict:
    """Run ``python script --worker ARGS`` and return the JSON object it prints last."""
    command = [sys.executable, script, "--worker", *map(str, args)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})}
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def emit(record: dict) -> None:
    """A worker's result, printed as the JSON line :func:`run_worker` reads."""
    print(json.dumps(record), flush=True)


def machine() -> dict:
    """Where the numbers came from."""
    cpu = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A markdown table of ``rows``; ``columns`` are (key, header, format spec)."""

    def cell(row, key, spec):
        value = row.get(key)
        return "–" if value is None else format(value, spec) if spec else str(value)

    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join(" ---: " if spec else " --- " for _, _, spec in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(r, k, s) for k, _, s in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str, record: dict) -> None:
    from sla_jax.outputs import atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_json(path, record)
    print(f"wrote {path}")
