"""Does the progress bar tell the truth, and what does bounding the queue of dispatched steps cost?

Runs sla_jax's training loop (``sla_jax.training.loop.fit``, the real jitted CPS step on random images) twice per
round, each in its own process: with the shipped bound (at most ``MAX_IN_FLIGHT`` steps dispatched ahead of
the last finished one) and unbounded (the host dispatches as fast as it can, as before the bound). For
each it records every update of the bar: the largest gap between two updates in units of the median step
(a stall), the bar's own rate at each logging step against the images/s that ``metrics.jsonl`` logs for
that window, and the wall time of all steps (the throughput). Prints a markdown table, writes JSON.

    python bench/progress.py [--size 128] [--batch 64] [--steps 60] [--log_every 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

VARIANTS = {"bounded": None, "unbounded": 10**9}  # None: the shipped MAX_IN_FLIGHT


def worker(variant: str, size: int, batch: int, steps: int, log_every: int) -> dict:
    from functools import partial

    import jax
    import numpy as np
    from tqdm import tqdm

    from sla_jax.training import loop, pretext
    from sla_jax.training.models import PretextNet
    from sla_jax.training.state import data_mesh, init_state

    updates = []

    class Recording(tqdm):
        def update(self, n=1):
            result = super().update(n)
            if n:
                updates.append((time.perf_counter(), self.n, self.format_dict.get("rate")))
            return result

    loop.tqdm = Recording
    model = PretextNet(num_classes=2, head=(512, 128))
    optimizer = common.sla_jax_optimizer(total_steps=steps)
    spec = pretext.StepSpec(batch_size=batch, transform="cps", pairing="paired", scar_scale=1.0)
    state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))(jax.random.key(0))
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8))
    compiled = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=data_mesh())
    hparams = pretext.HParams.create()
    step_fn = lambda s, x, k: compiled(s, x, k, hparams)  # noqa: E731
    warm, _ = step_fn(state, images, jax.random.key(1))  # compile outside the timed loop
    jax.block_until_ready(warm)
    state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))(jax.random.key(0))
    limit = VARIANTS[variant] or loop.MAX_IN_FLIGHT
    records: list[dict] = []
    started = time.perf_counter()
    state = loop.fit(
        state,
        images,
        jax.random.key(1),
        step_fn=step_fn,
        total_steps=steps,
        images_per_step=batch,
        manager=None,
        checkpoint_every=10**9,
        log_every=log_every,
        log=records.append,
        progress=True,
        max_in_flight=limit,
    )
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    times = np.array([t for t, _, _ in updates])
    counts = np.array([n for _, n, _ in updates])
    per_step = np.diff(times) / np.maximum(np.diff(counts), 1)
    median_step = float(np.median(per_step))
    gaps = np.diff(times) / median_step
    ratios = []
    for record in records[1:]:  # the first window holds no compile, but the bar's smoothing starts there
        bar = [rate for _, n, rate in updates if n <= record["step"] and rate]
        if bar:
            ratios.append(bar[-1] * batch / record["images_per_s"])
    return {
        "variant": variant,
        "max_in_flight": limit,
        "steps": steps,
        "seconds": seconds,
        "images_per_s": steps * batch / seconds,
        "median_step_seconds": median_step,
        "largest_gap_in_steps": float(gaps.max()),
        "bar_over_log_rate": ratios,
        "worst_rate_deviation": float(max(abs(r - 1) for r in ratios)) if ratios else None,
        "updates": len(updates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log_every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "progress.json"))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        common.emit(worker(args.worker[0], *map(int, args.worker[1:])))
        return
    rows = []
    for round_ in range(args.rounds):
        for variant in VARIANTS:
            print(f"round {round_ + 1}/{args.rounds}: {variant} ...", flush=True)
            rows.append(
                {
                    "round": round_ + 1,
                    **common.run_worker(
                        __file__, [variant, args.size, args.batch, args.steps, args.log_every], timeout=3600
                    ),
                }
            )
    columns = [
        ("round", "round", ""),
        ("variant", "queue", ""),
        ("seconds", "s for all steps", ".1f"),
        ("images_per_s", "images/s", ".1f"),
        ("largest_gap_in_steps", "longest bar stall (steps)", ".2f"),
        ("worst_rate_deviation", "worst |bar rate / logged rate − 1|", ".1%"),
    ]
    print(common.table(rows, columns))
    common.write_json(
        args.out,
        {
            "rows": rows,
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "log_every": args.log_every,
            "machine": common.machine(),
            "command": " ".join(["python bench/progress.py", *sys.argv[1:]]),
        },
    )


if __name__ == "__main__":
    main()
